"""``doit kernel:repro``: the configured kernel built twice, and what a user installs compared byte for byte.

Both builds start from fresh O= folders below ``<build_dir>/repro`` with the config
kernel:config wrote and the environment kernel:build uses (timestamp, user, host, the debug
prefix maps, BTF without parallel encoding where the tree's pahole needs it: btf.py), with
different ``-j`` and without ccache (ccache would give the second build the first one's
objects, and the comparison would prove nothing about the compiler).  Compared: bzImage,
vmlinux, System.map, every module in modules.order, and everything ``modules_install`` writes
(the modules as installed, signed where the config signs them, and depmod's files), and the
recipe's out-of-tree modules, built against each side's tree and installed with it.  A
difference names the files (and diffoscope's account of them when it is installed); the
folders are kept then, removed when both builds agree.  Not part of ``doit kernel``: it costs two full builds.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from doit.tools import config_changed

from lfspass.diskspace import allocated, ensure_room
from lfspass.errors import BuildError
from lfspass.fsutil import sha256_file, write_atomic
from lfspass.kernel import btf, config_guard, preflight
from lfspass.kernel.external import (build_module, built_modules, install_vars, is_signed, kbuild, prepare_copy,
                                     source_digest)
from lfspass.kernel.build import build_timestamp, make_command, make_env, prepare_source, run_make, source_identity
from lfspass.kernel.install import config_has
from lfspass.kernel.identity import tool_version
from lfspass.kernel.tasks import KernelJob, _digest
from lfspass.tasks import Context, run_action

SIDES = ("a", "b")
_FIRST_GUESS = 4 << 30        # room one build may need when no earlier build shows its size
_DIFFOSCOPE_FILES = 3         # the first differing files diffoscope explains (each can take minutes)
_DIFFOSCOPE_BYTES = 1 << 20   # of its report per file


def jobs_pair(jobs: int) -> tuple[int, int]:
    """Two different ``-j``: the recipe's (else the machine's cores), and twice that."""
    n = jobs or os.cpu_count() or 1
    return n, 2 * n


def outputs(obj: Path) -> set[str]:
    """What the comparison covers, relative to an O= folder: the images and every module built."""
    return {"arch/x86/boot/bzImage", "vmlinux", "System.map"} | {
        str(ko.relative_to(obj)) for ko in built_modules(obj)}


def installed(root: Path) -> set[str]:
    """Every regular file ``modules_install`` wrote below ``root`` (signed modules, modules.dep...),
    as ``root/...`` names; the ``build`` and ``source`` links name the build folder and are left out."""
    return {f"root/{p.relative_to(root)}" for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def compare(a: Path, b: Path, names: set[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(name -> sha256 of each file both builds made alike, the names that differ or one build lacks);
    ``names`` relative to ``a`` and ``b``, by default both O= folders' outputs()."""
    same: dict[str, str] = {}
    differ: list[str] = []
    for rel in sorted(names if names is not None else outputs(a) | outputs(b)):
        fa, fb = a / rel, b / rel
        if not (fa.is_file() and fb.is_file()):
            differ.append(f"{rel} (only in build {'a' if fa.is_file() else 'b'})")
            continue
        digest = sha256_file(fa)
        if digest == sha256_file(fb):
            same[rel] = digest
        else:
            differ.append(rel)
    return same, differ


def _diffoscope(a: Path, b: Path, names: list[str], out: Path) -> list[Path]:
    """diffoscope's text report of the first differing files (when it is installed), bounded."""
    if shutil.which("diffoscope") is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rel in [n for n in names if "(" not in n][:_DIFFOSCOPE_FILES]:
        report = out / (rel.replace("/", "_") + ".txt")
        try:
            proc = subprocess.run(["diffoscope", "--text", "-", "--max-report-size", str(_DIFFOSCOPE_BYTES),
                                   str(a / rel), str(b / rel)], capture_output=True, text=True, timeout=600)
            text = proc.stdout[:_DIFFOSCOPE_BYTES] or proc.stderr[-2000:]
        except subprocess.TimeoutExpired:
            text = "diffoscope took more than 10 minutes; compare the files by hand\n"
        write_atomic(report, text)
        written.append(report)
    return written


class Repro:
    """Two builds of one recipe's configured kernel and their comparison."""

    def __init__(self, job: KernelJob) -> None:
        self.job = job
        self.top = job.layout.build_dir / "repro"
        self.report = self.top / "report.json"

    def inputs(self) -> dict:
        return {"build": self.job.build_inputs(), "config": self.job.config_inputs(), "v": 2,
                "pahole": tool_version("pahole", "--version"), "jobs": jobs_pair(self.job.k.jobs),
                "external": [[m.name, source_digest(Path(m.source)), m.make_args] for m in self.job.k.external_modules]}

    def _external(self, tree: Path, bdir: Path, jobs: int, env: dict[str, str], make_vars: list[str]) -> list[str]:
        """Each of the recipe's out-of-tree modules built against this side's tree and installed
        into its root (signed there as kernel:install would); their names as built, for compare()."""
        names = []
        for i, spec in enumerate(self.job.k.external_modules):
            copy, log = bdir / "external" / spec.name, bdir / f"external-{spec.name}.log"
            prepare_copy(spec, f"{self.job.recipe.path}: kernel.external_modules[{i}]", copy)
            build_module(tree, bdir, jobs, env, make_vars, spec, copy, log, self.job.ctx.release)
            kbuild(tree, bdir, jobs, env, make_vars, spec, copy, log, "modules_install",
                   f"INSTALL_MOD_PATH={bdir / 'root'}", *install_vars(spec))
            names += [f"external/{spec.name}/{ko.relative_to(copy)}" for ko in built_modules(copy)]
        return names

    def run(self) -> None:
        job, config = self.job, self.job.layout.config
        tree = prepare_source(job.source, job.layout.build_dir)
        config_guard.verify_or_stop(tree, config, job.requests, "(edited since lfspass wrote it)")
        preflight.check_tools(config)
        shutil.rmtree(self.top, ignore_errors=True)
        one = allocated(job.layout.obj) if (job.layout.obj / "vmlinux").is_file() else _FIRST_GUESS
        ensure_room(job.layout.build_dir, 2 * one, "kernel:repro (two kernel builds)", BuildError)
        stamp = build_timestamp(job.k.timestamp, tree)
        built: list[str] = []
        targets = ["bzImage"] + (["modules"] if config_has(config, "MODULES") else [])
        pair = jobs_pair(job.k.jobs)
        pahole = btf.make_vars(tree, config)   # the tree's flags without -j (btf.py): one run of its script
        for side, jobs in zip(SIDES, pair, strict=True):
            bdir = self.top / side
            env, make_vars = make_env(tree, bdir, stamp, use_ccache=False)
            (bdir / "obj").mkdir(parents=True)
            shutil.copyfile(config, bdir / "obj" / ".config")
            print(f"kernel repro: build {side} (-j{jobs}, no ccache) in {bdir / 'obj'} (log: {bdir / 'build.log'})")
            make_vars += pahole
            run_make(make_command(tree, bdir, jobs, make_vars, *targets), env, bdir / "build.log",
                     job.layout.build_dir / ".cc-count")
            if "modules" in targets:   # modules are signed as they are installed (MODULE_SIG_ALL)
                run_make(make_command(tree, bdir, jobs, make_vars + [f"INSTALL_MOD_PATH={bdir / 'root'}"],
                                      "modules_install"), env, bdir / "build.log")
                built = self._external(tree, bdir, jobs, env, make_vars)
        same, differ = compare(self.top / "a" / "obj", self.top / "b" / "obj")
        names = installed(self.top / "a" / "root") | installed(self.top / "b" / "root") | set(built)
        more_same, more_differ = compare(self.top / "a", self.top / "b", names)
        same.update(more_same)
        differ += more_differ
        signed = sorted(n for n in names if n.startswith("root/") and n.endswith(".ko") and is_signed(self.top / "a" / n))
        result = {"jobs": list(pair), "identical": same, "different": differ, "signed": signed,
                  "pahole_flags": pahole, "config_sha256": sha256_file(config)}
        if differ:
            explained = _diffoscope(self.top / "a" / "obj", self.top / "b" / "obj", differ, self.top / "diffoscope")
            write_atomic(self.top / "differences.json", json.dumps(result, indent=1, sort_keys=True) + "\n")
            shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            how = (f"diffoscope's reports in {self.top / 'diffoscope'}" if explained else
                   "install diffoscope (apt-get install diffoscope) to see how")
            raise BuildError(f"kernel:repro: {len(differ)} of {len(differ) + len(same)} files differ between two "
                             f"builds (-j{pair[0]} and -j{pair[1]}): {shown}; both builds are kept in {self.top}; {how}")
        for side in SIDES:
            shutil.rmtree(self.top / side)
        write_atomic(self.report, json.dumps(result, indent=1, sort_keys=True) + "\n")
        modules = sum(1 for name in same if name.endswith(".ko") and not name.startswith("root/"))
        print(f"kernel repro: two builds (-j{pair[0]}, -j{pair[1]}) are identical: bzImage, vmlinux, System.map, "
              f"{modules} module(s) as built and as installed (signed) ({self.report})")


def repro_task(ctx: Context) -> dict:
    """The doit task ``kernel:repro`` (a task of its own: ``doit kernel`` does not run it)."""
    job = KernelJob(ctx)
    repro = Repro(job)
    return {
        "basename": "kernel:repro",
        "doc": "build the configured kernel twice (other -j, no ccache) and compare bzImage, vmlinux and every module",
        "actions": [(run_action, [repro.run])],
        "task_dep": ["kernel:config"],
        "file_dep": [str(job.layout.config), str(source_identity(job.source, job.layout.build_dir))],
        "targets": [str(repro.report)],
        "uptodate": [config_changed(_digest(repro.inputs()))],
        "verbosity": 2,
    }
