"""doit sub-tasks kernel:config, kernel:build, kernel:install, with every input declared.

What ``base`` means across an upgrade (the recipe names another tree or version):

* ``tinyconfig``, ``defconfig`` or a file: the recipe is the whole truth.  The new
  tree is configured from that base plus the same requests, so the result never
  depends on what was built before (and two machines agree).  The "previous
  choices" carried forward are the recipe's requests.
* ``current``: the config in the build folder is the truth, as when one copies the
  old ``.config`` into a new tree and runs ``make olddefconfig``.  It is carried
  into the new tree, requests are applied on top; hand edits (``make menuconfig
  O=…``) survive.  With no build folder yet, the newest ``boot/config-*`` under the
  root seeds it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from collections.abc import Iterator

from doit.tools import config_changed

from lfspass import __version__
from lfspass.errors import BuildError
from lfspass.fsutil import sha256_file, write_atomic
from lfspass.model import config_values
from lfspass.kernel.kconfig import upgrade_report
from lfspass.kernel.kconfig.configure import configure
from lfspass.kernel.kconfig.input_stamp import written_by_lfspass
from lfspass.kernel.build import (BuildLayout, build_timestamp, make_command, make_env, prepare_source,
                     reproducible_env_digest, run_make, source_identity, tree_identity)
from lfspass.kernel import btf, config_guard, preflight
from lfspass.kernel.external import ExternalModules
from lfspass.kernel.identity import gcc_identity, plugin_versions, tool_version
from lfspass.kernel.install import config_has, install_kernel
from lfspass.kernel.release import tarball_info, tree_release
from lfspass.kernel.tarball import is_tarball
from lfspass.plan import resolve_devices, kernel_paths
from lfspass.plugins import call_device, call_host, get_plugin_manager
from lfspass.tasks import Context, run_action

NAMED_BASES = ("tinyconfig", "defconfig", "current")


def kernel_requests(recipe) -> list:
    """Every Kconfig request: core + plugins (host-wide and per device), lfspass's own, recipe."""
    from lfspass.model import Request

    pm = get_plugin_manager()
    reqs = list(call_host(pm, "lfspass_kconfig_requests", recipe=recipe))
    for dev in resolve_devices(recipe):
        reqs += call_device(pm, "lfspass_kconfig_requests", dev, recipe=recipe)
    # Nothing is forced against the base (a distro config signs modules): a config that signs
    # gets a persistent key instead (do_config), so two builds still agree.
    reqs += [Request(sym, val, "recipe") for sym, val in recipe.kernel.config.items()]
    return reqs


class KernelJob:
    """One recipe's kernel: paths, inputs, and the three actions."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.recipe, self.k = ctx, ctx.recipe, ctx.recipe.kernel
        self.source = Path(self.k.source)
        self.layout = BuildLayout(Path(self.k.build_dir))
        self.paths = kernel_paths(self.recipe, ctx.release)
        self.requests = kernel_requests(self.recipe)
        self.base_file = None if self.k.base in NAMED_BASES else Path(self.k.base)

    # -- inputs -----------------------------------------------------------------
    def tree_path(self) -> str:
        """Where the tree is (or will be) without extracting anything."""
        if is_tarball(self.source):
            return str(self.layout.build_dir / "src" / tarball_info(self.source, self.layout.build_dir)["top"])
        return str(self.source.resolve())

    def config_inputs(self) -> dict:
        return {
            "release": self.ctx.release, "source": str(self.source), "tree": self.tree_path(),
            "tree_identity": "" if is_tarball(self.source) else tree_identity(self.source),
            "base": self.k.base, "vfio": self.k.vfio, "resolve": self.k.resolve, "arch": "x86_64",
            "requests": [[r.symbol, r.value, r.source, r.optional] for r in self.requests],
            "gcc": gcc_identity(),
        }

    def build_inputs(self) -> dict:
        # The timestamp is named by where it comes from: a tree-derived one changes
        # only with the tree, which is a file_dep already.
        stamp = self.k.timestamp or (f"SOURCE_DATE_EPOCH={os.environ['SOURCE_DATE_EPOCH']}"
                                     if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit() else "tree Makefile mtime")
        return {"release": self.ctx.release, "tree": self.tree_path(), "timestamp": stamp,
                "obj": str(self.layout.obj.resolve()), "v": 1}

    def install_inputs(self) -> dict:
        return {"config": self.config_inputs(), "root": str(self.recipe.root.resolve()),
                "lfs_version": self.k.lfs_version, "docs": self.k.docs, "plugins": plugin_versions(),
                "lfspass": __version__}

    # -- actions ----------------------------------------------------------------
    def _env(self, tree: Path) -> tuple[dict[str, str], list[str]]:
        env, make_vars = make_env(tree, self.layout.build_dir, build_timestamp(self.k.timestamp, tree), self.k.ccache)
        return env, make_vars + btf.make_vars(tree, self.layout.config)   # BTF two builds agree on

    def _check_release(self, tree: Path) -> None:
        """The tree's own release must be the one the task graph was made for."""
        if self.k.version or not is_tarball(self.source):
            return
        got = tree_release(tree, self.k.config.get("LOCALVERSION", ""))
        if got != self.ctx.release:
            raise BuildError(f"{tree}: the extracted tree builds release {got}, not {self.ctx.release} "
                             "(its localversion files only show after extraction); run doit again")

    def _seed_current(self) -> bool:
        """Copy the config base = "current" starts from into the build folder; True when it did."""
        if self.layout.config.exists():
            return False
        installed = sorted((self.recipe.root / "boot").glob("config-*"), key=lambda p: p.stat().st_mtime)
        own = self.paths.config
        seed = own if own.exists() else (installed[-1] if installed else None)
        if seed is None:
            raise BuildError(f"{self.recipe.path}: kernel.base = 'current' but there is no config to start "
                             f"from ({self.layout.config} or {self.recipe.root}/boot/config-*); "
                             "set base = 'tinyconfig', 'defconfig' or a config file")
        self.layout.obj.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(seed, self.layout.config)
        print(f"kernel config: starting from {seed} (base = current)")
        return True

    def do_config(self) -> None:
        from lfspass.model import Request

        tree = prepare_source(self.source, self.layout.build_dir)
        self._check_release(tree)
        seeded = False
        if self.k.base == "current":
            seeded = self._seed_current()
            base = None
        else:
            base = self.base_file or self.k.base
        self.layout.obj.mkdir(parents=True, exist_ok=True)
        # A seed just copied in is where the upgrade starts, not a hand edit of lfspass's config.
        edited = not seeded and self.layout.config.exists() and not written_by_lfspass(self.layout.config)
        before = config_values(self.layout.config.read_text(errors="replace")) if edited else {}
        hint = f"resolve = true under [kernel] in {self.recipe.path}"
        result = configure(tree, self.layout.config, self.requests, base=base, resolve=self.k.resolve,
                           resolve_hint=hint, obj=self.layout.obj)
        report = result.report   # about the carried config, before the signing pass re-reads the result
        if preflight.needs_signing_key(self.layout.config):
            # kbuild would sign with a key it makes at random: sign with a persistent one.
            key = preflight.signing_key(self.recipe.path, self.k.signing_key)
            result = configure(tree, self.layout.config, self.requests + [Request(
                "MODULE_SIG_KEY", str(key), "lfspass: persistent module signing key")], base=base,
                resolve=self.k.resolve, resolve_hint=hint, obj=self.layout.obj)
        if edited:
            config_guard.report_edit(self.layout.config, before, self.requests, self.k.base)
        if report is not None:
            self._report(tree, report)
        elif self.k.base in ("tinyconfig", "defconfig"):
            upgrade_report.remove(self.layout.build_dir)
        preflight.check_release(tree, self.layout.config, self.ctx.release, self.recipe.path)
        preflight.check_tools(self.layout.config)
        for r in result.resolved:
            print(f"kernel config: resolve set {r.symbol}={r.value} ({r.why})")
        for s in result.skipped:
            print(f"kernel config: skipped {s.symbol}: {s.why}")
        print(f"kernel config: {self.layout.config} "
              + (f"changed ({len(result.changes)} symbols)" if result.changed else "unchanged"))
        write_atomic(self.layout.config_result, json.dumps(result.decisions_json(), indent=1) + "\n")
        self._check_upgrade()

    def _report(self, tree: Path, report) -> None:
        """Classify the upgrade report against the host's loaded modules, write it, print it short."""
        from lfspass.kernel.kconfig.scan_cache import scan_cached

        if not report.moved and (self.layout.build_dir / config_guard.REPORT).exists():
            return   # a rerun on the config the upgrade made: the upgrade's report stands
        host = Path(self.recipe.host.sysfs_root)
        loaded = upgrade_report.loaded_modules(host)
        upgrade_report.classify(report, tree, scan_cached(tree.resolve(), "x86_64"), loaded, str(host / "proc/modules"))
        _js, txt = upgrade_report.write(report, self.layout.build_dir)
        for line in report.short():
            print(f"kernel config: upgrade: {line}")
        print(f"kernel config: upgrade report {txt} (digest {report.digest})")

    def _check_upgrade(self) -> None:
        config_guard.check_upgrade(self.layout.build_dir, self.layout.config, self.k.accept_upgrade,
                                   self.k.accept_report, self.recipe.path)

    def do_build(self) -> None:
        tree = prepare_source(self.source, self.layout.build_dir)
        self._check_upgrade()   # an upgrade report not yet accepted: nothing is compiled
        # A hand edit after kernel:config ran: never build a kernel without its requests.
        config_guard.verify_or_stop(tree, self.layout.config, self.requests, "(edited since lfspass wrote it)")
        preflight.check_release(tree, self.layout.config, self.ctx.release, self.recipe.path)
        preflight.check_tools(self.layout.config)
        env, make_vars = self._env(tree)
        targets = ["bzImage"] + (["modules"] if config_has(self.layout.config, "MODULES") else [])
        self.layout.log.write_text("")  # the log of the latest build only
        print(f"kernel build: make {' '.join(targets)} in {self.layout.obj} (log: {self.layout.log})")
        run_make(make_command(tree, self.layout.build_dir, self.k.jobs, make_vars, *targets), env,
                 self.layout.log, self.layout.build_dir / ".cc-count")
        config_guard.verify_or_stop(tree, self.layout.config, self.requests, "after the build (syncconfig rewrote it)")
        built = (self.layout.obj / "include" / "config" / "kernel.release").read_text().strip()
        if built != self.ctx.release:
            raise BuildError(f"the kernel built release {built}, but lfspass expected {self.ctx.release} "
                             "(CONFIG_LOCALVERSION_AUTO on a git tree?); set [kernel] version = "
                             f"\"{built}\" or LOCALVERSION_AUTO = \"n\" in [kernel.config]")
        write_atomic(self.layout.stamp, json.dumps(self.output_digest(), indent=1, sort_keys=True) + "\n")

    def output_digest(self) -> dict[str, str]:
        """sha256 of what install copies; unchanged outputs leave the stamp (and install) alone."""
        obj = self.layout.obj
        files = [self.layout.bzimage, self.layout.system_map, self.layout.config, obj / "modules.builtin"]
        order = obj / "modules.order"
        if order.exists():
            files += [obj / (l.strip()[:-2] + ".ko" if l.strip().endswith(".o") else l.strip())
                      for l in order.read_text().splitlines() if l.strip()]
        return {str(f.relative_to(obj)): sha256_file(f) for f in files if f.exists()}

    def manifest_inputs(self, tree: Path, env: dict[str, str]) -> dict:
        base: dict = {"name": self.k.base}
        if self.base_file is not None:
            base.update(file=str(self.base_file), sha256=sha256_file(self.base_file))
        source: dict = {"path": str(self.source), "tree": str(tree), "release": self.ctx.release}
        if is_tarball(self.source):
            source.update(kind="tarball", sha256=sha256_file(self.source))
        else:
            source.update(kind="tree", identity=tree_identity(tree))
        try:
            decided = json.loads(self.layout.config_result.read_text())
        except (OSError, ValueError):
            decided = {}
        return {
            "lfspass": __version__, "recipe": str(self.recipe.path), "lfs_version": self.k.lfs_version,
            "source": source, "base": base, "vfio": self.k.vfio, "resolve": self.k.resolve,
            "requests": [{"symbol": r.symbol, "value": r.value, "source": r.source, "optional": r.optional}
                         for r in self.requests],
            "skipped": decided.get("skipped", []), "resolved": decided.get("resolved", []),
            "plugins": plugin_versions(), "compiler": tool_version("gcc", "--version"),
            "make": tool_version("make", "--version"), "env": reproducible_env_digest(env),
            "ccache": "CC=ccache gcc" in self._env(tree)[1],
            "module_signing": config_guard.signing_summary(self.layout.config, bool(self.k.signing_key)),
            "config_sha256": sha256_file(self.layout.config),
        }

    def do_install(self) -> None:
        tree = prepare_source(self.source, self.layout.build_dir)
        env, make_vars = self._env(tree)
        install_kernel(self.recipe.root, self.paths, self.ctx.release, tree, self.layout,
                       jobs=self.k.jobs, env=env, make_vars=make_vars, docs=self.k.docs,
                       inputs=self.manifest_inputs(tree, env),
                       stage_extra=ExternalModules(self).stage if self.k.external_modules else None)
        print(f"kernel install: {self.paths.vmlinuz} and {self.paths.modules_dir}")


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def kernel_tasks(ctx: Context) -> Iterator[dict]:
    """Yield kernel:config, kernel:build, kernel:install for the recipe's kernel."""
    job = KernelJob(ctx)
    lay, paths = job.layout, job.paths
    external = ExternalModules(job) if job.k.external_modules else None
    ident = str(source_identity(job.source, lay.build_dir))
    base_dep = [str(job.base_file)] if job.base_file is not None else []
    yield {
        "name": "config",
        "doc": "configure the kernel tree (its own conf: base + core, plugin and recipe requests, each verified)",
        "actions": [(run_action, [job.do_config])],
        "file_dep": [ident] + base_dep,
        "targets": [str(lay.config)],
        # A hand edit of .config (make menuconfig O=...) reruns the step: requests re-checked.
        # The acceptance of an upgrade report is checked here (not an input of the build or install).
        "uptodate": [config_changed(_digest({"inputs": job.config_inputs(), "accept": [job.k.accept_upgrade, job.k.accept_report]})),
                     lambda task=None, values=None: written_by_lfspass(lay.config)],
    }
    yield {
        "name": "build",
        "doc": "make bzImage modules out of tree (O=), reproducible environment, log in the build folder",
        "actions": [(run_action, [job.do_build])],
        "file_dep": [str(lay.config), ident],
        "targets": [str(lay.bzimage), str(lay.system_map), str(lay.stamp)],
        "uptodate": [config_changed(_digest(job.build_inputs()))],
    }
    if external is not None:
        yield external.task()   # a module that does not build stops here: install never runs
    yield {
        "name": "install",
        "doc": "install vmlinuz, System.map, config, modules and the manifest under the root",
        "actions": [(run_action, [job.do_install])],
        "file_dep": [str(lay.stamp), str(lay.config)] + (external.stamps() if external else []),
        "targets": [str(p) for p in (paths.vmlinuz, paths.system_map, paths.config, paths.modules_dep,
                                     paths.modules_builtin, paths.manifest)],
        "uptodate": [config_changed(_digest(job.install_inputs()))],
    }
