"""kernel:external: the recipe's out-of-tree modules (``[[kernel.external_modules]]``), each built by the
new kernel's own kbuild (``make -C <tree> O=<obj> M=<copy> modules``) after kernel:build and before
kernel:install, so a kernel one of them does not build against is never installed (nor offered to
`boot try`).  Each source is copied (a folder) or unpacked (a tarball) into
``<build_dir>/external/<name>/`` first: the user's source is never built in.  kernel:install then runs
kbuild's ``modules_install`` for each into the staged module tree (``updates/<name>/``), which signs
the module when the config has MODULE_SIG_ALL, with the key the kernel was built with, and runs
depmod over the staged tree, before the staged tree replaces the installed one.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lfspass.diskspace import ensure_room
from lfspass.errors import BuildError, InputError, RecipeError
from lfspass.fsutil import sha256_file, write_atomic
from lfspass.kernel.build import BuildLayout, last_error, make_command, prepare_source, run_make
from lfspass.kernel.install import config_has, depmod_tool, installed_files
from lfspass.kernel.tarball import is_tarball, unpacked_size, unsafe_member
from lfspass.recipe import ExternalModuleSpec, KernelSection

# Build products and VCS data: never copied from a source folder, never part of its digest.
IGNORED = (".git", ".svn", ".hg", "*.o", "*.ko", "*.ko.*", "*.mod", "*.mod.c", ".*.cmd", ".*.d", "*.a",
           "Module.symvers", "modules.order", "modules.nsdeps", ".tmp_versions", ".cache.mk")
_FIRST_ERROR = re.compile(r"\berror:|^ERROR:|undefined!|undefined reference")
SIG_MAGIC = b"~Module signature appended~\n"   # what sign-file appends (include/linux/module_signature.h)


@dataclass(frozen=True)
class ModuleLayout:
    """One external module's files in the kernel build folder."""

    build_dir: Path
    name: str

    @property
    def copy(self) -> Path:
        """The copy kbuild builds in (M=)."""
        return self.build_dir / "external" / self.name

    @property
    def log(self) -> Path:
        return self.build_dir / "external" / f"{self.name}.log"

    @property
    def stamp(self) -> Path:
        """What the last good build made (kernel:external's target, kernel:install's file_dep)."""
        return self.build_dir / "external" / f"{self.name}.json"


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in IGNORED)


def source_digest(source: Path) -> str:
    """sha256 of a module source: a tarball's bytes, or a folder's names, kinds, modes and contents
    (build products left out: a `make` run in the user's folder changes nothing); "missing" when absent."""
    if source.is_file():
        return "tarball:" + sha256_file(source)
    if not source.is_dir():
        return "missing"
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if not _ignored(d))
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            if _ignored(name):
                continue
            p = Path(dirpath, name)
            h.update(str(p.relative_to(source)).encode() + b"\0")
            if p.is_symlink():
                h.update(b"link\0" + os.readlink(p).encode() + b"\0")
            elif p.is_file():
                h.update(b"exec\0" if os.access(p, os.X_OK) else b"file\0")
                h.update(sha256_file(p).encode() + b"\0")
    return "tree:" + h.hexdigest()


def _unpack(tarball: Path, into: Path, where: str) -> Path:
    """Unpack a module tarball under ``into`` with the kernel tarball's rules; its top (one folder, or ``into``)."""
    bad = unsafe_member(tarball)
    if bad:
        raise InputError(f"{where} = {str(tarball)!r}: member {bad}: it would land outside the module's folder, "
                         "so nothing was unpacked; repack the module without it")
    ensure_room(into.parent, unpacked_size(tarball), f"{where}: unpacking {tarball}", BuildError,
                "free space, or set [kernel] build_dir on another filesystem")
    try:
        with tarfile.open(tarball) as tf:
            tf.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BuildError(f"{where} = {str(tarball)!r}: not a readable tarball ({exc}); pack it again "
                         "(tar -czf NAME.tar.gz NAME/) or name its folder") from None
    entries = list(into.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() else into


def prepare_copy(spec: ExternalModuleSpec, where: str, dest: Path) -> None:
    """Replace ``dest`` with a fresh copy of the module's source (a folder copied, a tarball unpacked)."""
    source = Path(spec.source)
    if not source.exists():
        raise RecipeError(f"{where}.source = {spec.source!r}: no such folder or tarball; fix the path (relative "
                          "paths start at the recipe's folder)")
    if source.is_file() and not is_tarball(source):
        raise RecipeError(f"{where}.source = {spec.source!r}: neither a folder nor a tarball (.tar, .tar.gz, "
                          ".tgz, .tar.xz, .tar.bz2)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if source.is_dir():
            top = tmp / "src"
            shutil.copytree(source, top, symlinks=True, ignore=lambda _d, names: [n for n in names if _ignored(n)])
        else:
            (tmp / "src").mkdir()
            top = _unpack(source, tmp / "src", f"{where}.source")
        if not (top / "Kbuild").is_file() and not (top / "Makefile").is_file():
            raise BuildError(f"{where}.source = {spec.source!r}: no Kbuild or Makefile at its top; point it at the "
                             "module's folder (the one `make -C /lib/modules/$(uname -r)/build M=$PWD` runs in)")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(top, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def first_error(log: Path, copy: Path) -> str:
    """The first compiler, linker or modpost error in a module's build log, its paths made short."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    hit = next((line.strip() for line in lines if _FIRST_ERROR.search(line)), None) or last_error(lines)
    return hit.replace(f"{copy.resolve()}/", "").replace(f"{copy}/", "")


def built_modules(copy: Path) -> list[Path]:
    """The .ko files kbuild made in ``copy``, as its modules.order lists them."""
    order = copy / "modules.order"
    if not order.is_file():
        return []
    out = []
    for line in order.read_text().split():
        rel = line[:-2] + ".ko" if line.endswith(".o") else line
        p = Path(rel) if Path(rel).is_absolute() else copy / rel
        out.append(p)
    return out


def is_signed(ko: Path) -> bool:
    try:
        with open(ko, "rb") as fh:
            fh.seek(-len(SIG_MAGIC), os.SEEK_END)
            return fh.read() == SIG_MAGIC
    except OSError:
        return False


def kbuild(tree: Path, build_dir: Path, jobs: int, env: dict[str, str], make_vars: list[str],
           spec: ExternalModuleSpec, copy: Path, log: Path, *targets: str) -> None:
    """The kernel's own kbuild (``make -C tree O=build_dir/obj M=copy``) on one module's copy, with the
    kernel build's environment; the copy's path kept out of the debug info as the tree's and obj's are."""
    maps = f" -fdebug-prefix-map={copy.resolve()}/="
    env = dict(env, KCFLAGS=env.get("KCFLAGS", "") + maps, KAFLAGS=env.get("KAFLAGS", "") + maps)
    run_make(make_command(tree, build_dir, jobs, make_vars, *spec.make_args, f"M={copy.resolve()}", *targets),
             env, log, label=f"external module {spec.name}")


def install_vars(spec: ExternalModuleSpec) -> list[str]:
    """What kbuild's modules_install of a module needs besides INSTALL_MOD_PATH: its updates/ folder."""
    return [f"INSTALL_MOD_DIR=updates/{spec.name}", "INSTALL_MOD_STRIP=1", f"DEPMOD={depmod_tool()}"]


def build_module(tree: Path, build_dir: Path, jobs: int, env: dict[str, str], make_vars: list[str],
                 spec: ExternalModuleSpec, copy: Path, log: Path, release: str) -> None:
    """``make modules`` on a prepared copy; a failure is one BuildError naming the module and its first error."""
    try:
        kbuild(tree, build_dir, jobs, env, make_vars, spec, copy, log, "modules")
    except BuildError:
        raise BuildError(f"external module {spec.name} ({spec.source}) does not build against kernel {release}: "
                         f"{first_error(log, copy)}; the kernel is not installed; full log: {log}") from None


class KernelJobLike(Protocol):
    """What this module reads of kernel/tasks.py's KernelJob (which imports this module)."""

    ctx: Any
    recipe: Any
    k: KernelSection
    source: Path
    layout: BuildLayout

    def build_inputs(self) -> dict: ...

    def _env(self, tree: Path) -> tuple[dict[str, str], list[str]]: ...


class ExternalModules:
    """The recipe's external modules against one KernelJob's tree: the task, the build, the staging."""

    def __init__(self, job: KernelJobLike) -> None:
        self.job = job
        self.specs = list(job.k.external_modules)
        self.build_dir = job.layout.build_dir

    def where(self, i: int) -> str:
        return f"{self.job.recipe.path}: kernel.external_modules[{i}]"

    def layout(self, spec: ExternalModuleSpec) -> ModuleLayout:
        return ModuleLayout(self.build_dir, spec.name)

    def stamps(self) -> list[str]:
        return [str(self.layout(s).stamp) for s in self.specs]

    def inputs(self) -> dict:
        return {"build": self.job.build_inputs(), "ccache": self.job.k.ccache, "jobs": self.job.k.jobs, "v": 1,
                "modules": [{"name": s.name, "source": s.source, "digest": source_digest(Path(s.source)),
                             "make_args": s.make_args} for s in self.specs]}

    def built_ok(self) -> bool:
        """Every module's last build is still in the build folder, byte for byte (else: build again)."""
        for spec in self.specs:
            lay = self.layout(spec)
            try:
                made = json.loads(lay.stamp.read_text())["modules"]
                if not all(sha256_file(lay.copy / rel) == sha for rel, sha in made.items()):
                    return False
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return False
        return True

    def do_build(self) -> None:
        job = self.job
        tree = prepare_source(job.source, self.build_dir)
        if not config_has(job.layout.config, "MODULES"):
            raise BuildError(f"{job.recipe.path}: kernel.external_modules needs loadable modules, but the kernel "
                             "config has MODULES off; set MODULES = \"y\" in [kernel.config]")
        for i, spec in enumerate(self.specs):
            self._build_one(tree, i, spec)

    def _build_one(self, tree: Path, i: int, spec: ExternalModuleSpec) -> None:
        lay, release = self.layout(spec), self.job.ctx.release
        digest = source_digest(Path(spec.source))
        lay.stamp.unlink(missing_ok=True)   # a failed build leaves no stamp: install cannot run on an old one
        prepare_copy(spec, self.where(i), lay.copy)
        env, make_vars = self.job._env(tree)
        lay.log.write_text("")   # the latest build's log only
        print(f"kernel external: {spec.name}: make modules against {release} in {lay.copy} (log: {lay.log})")
        build_module(tree, self.build_dir, self.job.k.jobs, env, make_vars, spec, lay.copy, lay.log, release)
        kos = built_modules(lay.copy)
        missing = [str(k) for k in kos if not k.is_file()]
        if not kos or missing:
            raise BuildError(f"external module {spec.name} ({spec.source}): kbuild made no module "
                             f"{'(' + missing[0] + ' is missing)' if missing else '(its modules.order is empty)'}"
                             f"; does its Kbuild set obj-m? full log: {lay.log}")
        made = {str(k.relative_to(lay.copy)): sha256_file(k) for k in kos}
        print(f"kernel external: {spec.name}: built {', '.join(sorted(made))}")
        write_atomic(lay.stamp, json.dumps({"name": spec.name, "source": spec.source, "source_digest": digest,
                                            "make_args": spec.make_args, "release": release, "modules": made},
                                           indent=1, sort_keys=True) + "\n")

    def stage(self, staging: Path, staged: Path) -> dict:
        """kbuild's modules_install of each module into the staged tree (signed there when the config
        says so, depmod run over it); the manifest's ``external_modules``."""
        job, release = self.job, self.job.ctx.release
        tree = prepare_source(job.source, self.build_dir)
        if not self.built_ok():
            raise BuildError(f"the external modules' build in {self.build_dir / 'external'} is missing or changed "
                             "since kernel:external ran; run `doit kernel` again")
        entries = []
        for spec in self.specs:
            lay = self.layout(spec)
            env, make_vars = job._env(tree)
            kbuild(tree, self.build_dir, job.k.jobs, env, make_vars, spec, lay.copy, lay.log, "modules_install",
                   f"INSTALL_MOD_PATH={staging}", *install_vars(spec))
            files = installed_files(staged, [staged / "updates" / spec.name])
            deps = {line.split(":", 1)[0] for line in (staged / "modules.dep").read_text().splitlines()}
            kos = [rel for rel in files if ".ko" in rel]
            if not kos or not set(kos) <= deps:
                raise BuildError(f"external module {spec.name}: kbuild's modules_install left "
                                 f"{', '.join(kos) or 'nothing'} under updates/{spec.name}/, "
                                 f"{'not listed in modules.dep' if kos else 'no module'}; see {lay.log}")
            stamp = json.loads(lay.stamp.read_text())
            entries.append({"name": spec.name, "source": spec.source, "source_digest": stamp["source_digest"],
                            "make_args": spec.make_args, "signed": all(is_signed(staged / k) for k in kos),
                            "files": {f"lib/modules/{release}/{rel}": sha for rel, sha in files.items()}})
            print(f"kernel install: external module {spec.name}: {', '.join(kos)}")
        return {"external_modules": entries}

    def task(self) -> dict:
        from doit.tools import config_changed

        from lfspass.tasks import run_action

        lay = self.job.layout
        return {
            "name": "external",
            "doc": "build the recipe's out-of-tree modules against the new tree (kbuild M=, a copy in the build folder)",
            "actions": [(run_action, [self.do_build])],
            "file_dep": [str(lay.stamp), str(lay.config)],
            "targets": self.stamps(),
            "uptodate": [config_changed(json.dumps(self.inputs(), sort_keys=True)),
                         lambda task=None, values=None: self.built_ok()],
        }
