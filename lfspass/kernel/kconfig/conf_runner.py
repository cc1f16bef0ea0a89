"""Drive the kernel's own Kconfig (scripts/kconfig/conf) the way the build and its tests do.

A kernel tree is configured with ``make -C <tree> O=<obj> KCONFIG_CONFIG=<file> <target>``,
run without ARCH when the build is (the header then says ``Linux/x86`` like the build's
syncconfig writes it).  Any other Kconfig folder (scripts/kconfig/tests/*, a copy of one, a
test fixture) is read by a conf that the kernel's make builds from the sources conf_source.py
picks, run with ``srctree`` pointing at the folder, as the kernel's own test harness runs it.
``make`` always runs in an environment lfspass controls: nothing the caller exported
(CROSS_COMPILE, LLVM, KCFLAGS, ARCH, ...) changes the result.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import KconfigError
from lfspass.fsutil import require_tool
from lfspass.kernel.kconfig import conf_direct
from lfspass.kernel.kconfig.conf_source import ENV, cache_root, conf_kernel, is_kernel_tree
from lfspass.kernel.release import makefile_version

SRCARCH = {"x86_64": "x86", "i386": "x86", "x86": "x86"}
# The host architecture as the top Makefile's SUBARCH names it (uname -m, mapped).
_HOST_ARCH = {"x86_64": "x86_64", "i686": "i386", "i386": "i386"}.get(platform.machine(), platform.machine())
# What the kernel's make reads from the environment and must not inherit from the caller.
INHERITED = ("ARCH", "SRCARCH", "SUBARCH", "CROSS_COMPILE", "LLVM", "LLVM_IAS", "CC", "LD", "AR", "NM",
             "OBJCOPY", "HOSTCC", "HOSTCXX", "KCFLAGS", "KCPPFLAGS", "KAFLAGS", "KRUSTFLAGS", "KBUILD_OUTPUT",
             "KBUILD_EXTMOD", "KCONFIG_CONFIG", "KCONFIG_ALLCONFIG", "KCONFIG_DEFCONFIG_LIST",
             "KCONFIG_OVERWRITECONFIG", "KCONFIG_NOSILENTUPDATE", "KCONFIG_AUTOCONFIG", "KCONFIG_SEED",
             "KCONFIG_PROBABILITY", "KCONFIG_WARN_CHANGED_INPUT", "INSTALL_MOD_PATH", "INSTALL_PATH",
             "O", "V", "W", "C", "M", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "LOCALVERSION", "srctree", "objtree")


def controlled_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without anything that steers kbuild, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in INHERITED and not k.startswith(("KBUILD_", "KCONFIG_", "CONFIG_"))}
    env.update({"LC_ALL": "C", "TZ": "UTC"})
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class KernelConf:
    """How to run conf for one Kconfig tree."""

    tree: Path      # the folder whose Kconfig is read (srctree)
    kernel: Path    # the kernel tree conf is built from
    obj: Path       # where make builds conf (an O= folder)
    arch: str
    origin: str = ""  # how a Kconfig folder's conf source was chosen (for messages)

    @property
    def direct(self) -> bool:
        """True for a Kconfig folder inside a kernel tree (conf runs with srctree = that folder)."""
        return self.tree != self.kernel

    @property
    def srcarch(self) -> str:
        return SRCARCH.get(self.arch, self.arch)

    def make_vars(self) -> list[str]:
        # The build runs make without ARCH; only a foreign architecture needs it spelt out.
        return [] if self.arch == _HOST_ARCH else [f"ARCH={self.arch}"]

    def kconfig_env(self) -> dict[str, str]:
        return kconfig_env(self.arch)


def kconfig_env(arch: str) -> dict[str, str]:
    """ARCH and SRCARCH as the kernel's make exports them to Kconfig (ARCH=x86 on an x86 host)."""
    srcarch = SRCARCH.get(arch, arch)
    return {"SRCARCH": srcarch, "ARCH": ("x86" if srcarch == "x86" else arch) if arch == _HOST_ARCH else arch}


def _cache_obj(kernel: Path) -> Path:
    return cache_root() / "kconfig-obj" / hashlib.sha256(str(kernel).encode()).hexdigest()[:16]


def _clean(kernel: Path) -> None:
    if (kernel / ".config").exists():
        raise KconfigError(f"{kernel}/.config exists: the tree was configured in place, and make refuses "
                           f"out-of-tree (O=) configuration then; run `make -C {kernel} mrproper` or use a clean copy")


def locate(tree: Path, arch: str, obj: Path | None = None, conf_source: str | Path | None = None) -> KernelConf:
    """The conf for ``tree``: a kernel tree's own; for a Kconfig folder, one built from conf_source's pick."""
    tree = tree.resolve()
    if is_kernel_tree(tree):
        if conf_source:
            raise KconfigError(f"--conf-source {conf_source}: {tree} is a kernel tree, configured by its own "
                               "conf; --conf-source is for a Kconfig folder outside a kernel tree")
        _clean(tree)
        return KernelConf(tree, tree, (obj or _cache_obj(tree)).resolve(), arch)
    if not (tree / "Kconfig").is_file():
        raise KconfigError(f"{tree}: no Kconfig file there; --tree must name a kernel tree or a Kconfig folder")
    kernel, origin = conf_kernel(tree, conf_source)
    _clean(kernel)
    return KernelConf(tree, kernel, _cache_obj(kernel).resolve(), arch, origin)


def _fail(what: str, proc: subprocess.CompletedProcess) -> KconfigError:
    lines = [l.strip() for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
    last = next((l for l in reversed(lines) if "error" in l.lower() or "***" in l), lines[-1] if lines else "no output")
    return KconfigError(f"{what} failed (exit {proc.returncode}): {last}")


def _run(argv: list[str], env: dict[str, str], cwd: str | None = None,
         meanwhile: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """Run ``argv``; ``meanwhile`` runs in this process once it has started (not before: a
    thread holding the GIL would hold up the start)."""
    with subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                proc.kill()
                raise
        out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_make(kc: KernelConf, target: str, config: Path | None, env: dict[str, str] | None = None,
             arch: bool = False, variables: tuple[str, ...] = (), jobs: int = 1,
             meanwhile: Callable[[], None] | None = None) -> str:
    """``make <target>`` on ``config`` (read and rewritten in place; None: O=/.config); returns conf's warnings."""
    require_tool("make", "build-essential")
    kc.obj.mkdir(parents=True, exist_ok=True)
    where = [f"KCONFIG_CONFIG={config.resolve()}"] if config is not None else []
    cmd = ["make", "-s", *([f"-j{jobs}"] if jobs > 1 else []), "-C", str(kc.kernel), f"O={kc.obj}", *where,
           *([f"ARCH={kc.arch}"] if arch else kc.make_vars()), *variables, target]
    # One make at a time per O= folder: two runs building conf there at once would clash.
    with open(kc.obj / ".lfspass-kconfig.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = _run(cmd, controlled_env(env), meanwhile=meanwhile)
    if proc.returncode != 0:
        raise _fail(f"`make {target}` in {kc.kernel}", proc)
    return proc.stderr


def _olddefconfig(kc: KernelConf, config: Path, env: dict[str, str] | None,
                  meanwhile: Callable[[], None] | None) -> str:
    """``make olddefconfig`` of a kernel tree; from the second run on, its conf started directly
    as make starts it (conf_direct.py), which spares make's reading of the top Makefile."""
    extra, base = dict(env or {}), controlled_env()
    kc.obj.mkdir(parents=True, exist_ok=True)
    with open(kc.obj / ".lfspass-kconfig.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rec = conf_direct.recorded(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(), base)
        if rec is None and not (kc.obj / "scripts" / "kconfig" / "conf").is_file():
            fcntl.flock(lock, fcntl.LOCK_UN)   # build_conf's make takes it
            build_conf(kc)
            fcntl.flock(lock, fcntl.LOCK_EX)
            rec = conf_direct.recorded(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(), base)
        if rec is not None:
            proc = _run(*conf_direct.command(rec, base, config, extra), meanwhile=meanwhile)
            if proc.returncode != 0:
                raise _fail(f"the kernel's conf ({' '.join(rec['argv'])}) in {kc.obj}", proc)
            return proc.stderr
    args, add, tmp = conf_direct.recorder(kc.obj)
    try:
        said = run_make(kc, "olddefconfig", config, {**extra, **add}, variables=tuple(args), meanwhile=meanwhile)
        conf_direct.keep(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(), base, tmp, extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return said


def build_conf(kc: KernelConf) -> Path:
    """scripts/kconfig/conf of ``kc.kernel``, built into ``kc.obj`` by the kernel's make (which knows what is stale)."""
    conf = kc.obj / "scripts" / "kconfig" / "conf"
    if not conf.is_file():
        for tool in ("gcc", "flex", "bison"):
            if shutil.which(tool) is None:
                raise KconfigError(f"cannot build the kernel's conf from {kc.kernel}: '{tool}' not found on PATH "
                                   f"(apt-get install {tool}); lfspass writes a .config only through the kernel's conf")
    with tempfile.TemporaryDirectory(prefix="lfspass-conf-") as tmp:
        # KBUILD_KCONFIG (scripts/kconfig/Makefile) names an empty top Kconfig: building conf
        # then reads none of the tree's Kconfig files (a tarball's extract has none).
        (Path(tmp) / "Kconfig").write_text("")
        (Path(tmp) / "config").write_text("")
        host = KernelConf(kc.kernel, kc.kernel, kc.obj, _HOST_ARCH)  # conf is a host program
        # The run also records how make starts conf, so the next run needs no make (conf_direct.py).
        args, add, record = conf_direct.recorder(kc.obj)
        base = controlled_env()
        try:
            run_make(host, "olddefconfig", Path(tmp) / "config", add, variables=(f"KBUILD_KCONFIG={tmp}/Kconfig", *args),
                     jobs=os.cpu_count() or 1)
            conf_direct.keep(kc.kernel, kc.obj, kc.srcarch, host.make_vars(), base, record, {}, f"{tmp}/Kconfig")
        finally:
            shutil.rmtree(record, ignore_errors=True)
    return conf


def prepare(kc: KernelConf):
    """Start building a kernel tree's conf in a thread when its O= folder has none (the caller
    reads the tree's Kconfig files meanwhile); returns what to call to wait for it."""
    if kc.direct or (kc.obj / "scripts" / "kconfig" / "conf").is_file():
        return lambda: None
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="lfspass-conf-build")
    job = pool.submit(build_conf, kc)
    pool.shutdown(wait=False)
    return job.result


def run_conf(kc: KernelConf, mode: str, config: Path, env: dict[str, str] | None = None,
             meanwhile: Callable[[], None] | None = None) -> str:
    """Run conf ``--<mode>`` on ``config``; returns conf's warnings (stderr).  ``meanwhile`` is
    called once conf (or make) has started, to work while it runs."""
    if not kc.direct:
        if mode == "olddefconfig":
            return _olddefconfig(kc, config, env, meanwhile)
        return run_make(kc, mode, config, env, meanwhile=meanwhile)
    conf = build_conf(kc)
    with tempfile.TemporaryDirectory(prefix="lfspass-conf-") as tmp:
        extra = {**kc.kconfig_env(), "srctree": str(kc.tree), "KCONFIG_CONFIG": str(config.resolve()),
                 "KCONFIG_DEFCONFIG_LIST": "", **(env or {})}
        proc = _run([str(conf), "-s", f"--{mode}", "Kconfig"], controlled_env(extra), tmp, meanwhile)
    if proc.returncode != 0:
        raise _unreadable(kc, proc)
    return proc.stderr


def _unreadable(kc: KernelConf, proc: subprocess.CompletedProcess) -> KconfigError:
    """conf could not read the folder: its own first complaint, and the way forward."""
    lines = [l.strip() for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
    first = next((l for pat in ("unknown statement", "invalid statement", "syntax error", "error")
                  for l in lines if pat in l.lower()), lines[0] if lines else f"exit {proc.returncode}")
    more = f" (and {len(lines) - 1} more line(s))" if len(lines) > 1 else ""
    version = makefile_version(kc.kernel)
    return KconfigError(f"the kernel's conf (Linux {version or '?'}, from {kc.origin}) cannot read {kc.tree}: "
                        f"{first}{more}; if that Kconfig is newer than Linux {version or 'this tree'}, pass "
                        f"--conf-source a newer kernel tree or linux-source tarball (or set {ENV}), "
                        "else fix the Kconfig line it names")


def named_base(kc: KernelConf, target: str, tmp: Path) -> str:
    """What ``make <target>`` (tinyconfig, defconfig, ...) writes, made in a folder of its own.

    Its own O= folder: the fragment targets (tiny.config) merge into ``.config`` there
    whatever KCONFIG_CONFIG says, and the build folder must not change before the result
    is verified.
    """
    out = tmp / "base.config"
    if kc.direct:
        if target in ("tinyconfig", "defconfig"):  # make targets of a kernel tree, not conf modes
            raise KconfigError(f"--base {target} needs a kernel tree; {kc.tree} is a Kconfig folder: pass "
                               "allnoconfig, alldefconfig, allyesconfig, allmodconfig or a config file")
        out.write_text("")
        run_conf(kc, target, out)
        return out.read_text()
    private = KernelConf(kc.kernel, kc.kernel, _cache_obj(kc.kernel) / "base", kc.arch)
    private.obj.mkdir(parents=True, exist_ok=True)
    with open(private.obj / ".lfspass-base.lock", "w") as lock:  # .config there is shared
        fcntl.flock(lock, fcntl.LOCK_EX)
        (private.obj / ".config").unlink(missing_ok=True)
        # ARCH spelt out: `make tinyconfig` without it is a 32-bit x86 kernel; the config
        # carries 64BIT=y from here, so the build (run without ARCH) keeps it.
        run_make(private, target, None, arch=True)
        return (private.obj / ".config").read_text()


def warnings_for(stderr: str, symbol: str) -> list[str]:
    """conf's warnings that name ``symbol`` (value invalid, changed input...), file prefix dropped."""
    pat = re.compile(rf"\b(CONFIG_)?{re.escape(symbol)}\b")
    return [re.sub(r"^\S+:\d+:", "", l).strip() for l in stderr.splitlines()
            if pat.search(l) and "override: reassigning" not in l]


def base_files(tree: Path, base: str | Path | None, arch: str) -> list[Path]:
    """The files a base reads, for the no-change stamp."""
    if base is None:
        return []
    srcarch = SRCARCH.get(arch, arch)
    if base == "tinyconfig":
        return [tree / "kernel/configs/tiny-base.config", tree / "kernel/configs/tiny.config",
                tree / f"arch/{srcarch}/configs/tiny.config"]
    if base == "defconfig":
        name = {"x86_64": "x86_64_defconfig", "i386": "i386_defconfig"}.get(arch, "defconfig")
        return [tree / f"arch/{srcarch}/configs/{name}"]
    if base in ("allnoconfig", "alldefconfig", "allyesconfig", "allmodconfig"):
        return []
    return [Path(base)]
