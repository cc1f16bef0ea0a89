"""The one adapter over kconfiglib: parse a kernel tree, apply requests, write .config."""
from __future__ import annotations

import io
import lzma
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import kconfiglib as _kc

from lfspass.errors import KconfigError
from lfspass.model import Request
from lfspass.fsutil import write_atomic
from lfspass.kernel import shell as kconfig_shell
from lfspass.kernel import stamp as stamp
from lfspass.kernel.why import check_request, explain, fixes, tri

# Kconfiglib 14.1.0 (2020) predates syntax newer kernels use.  We rewrite those lines
# while reading, so the installed library stays untouched:
#   5.13: `option modules` became a bare `modules` line (kernel/module/Kconfig);
#   6.18: `transitional` marks a symbol kept only to read old .config files.  Dropping the
#         line keeps the symbol as a promptless one, which is what a new config sees.
_REWRITES = (
    (re.compile(r"^([ \t]+)modules[ \t]*(#.*)?$", re.M), r"\1option modules"),
    (re.compile(r"^([ \t]+)transitional[ \t]*(#.*)?$", re.M), r"\1# transitional (dropped by lfspass)"),
)
_SRCARCH = {"x86_64": "x86", "i386": "x86", "x86": "x86"}
_DEFCONFIG = {"x86_64": "arch/x86/configs/x86_64_defconfig", "i386": "arch/x86/configs/i386_defconfig"}
_CACHE: dict[tuple[str, str], tuple[_kc.Kconfig, dict]] = {}


@dataclass
class ConfigResult:
    """What configure() did; ``changes`` holds (symbol, old, new), '' meaning absent."""

    changed: bool
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    resolved: list[tuple[str, str, str]] = field(default_factory=list)


class _Kconfig(_kc.Kconfig):
    """Kconfig that reads newer kernels' syntax and xz-compressed .config files."""

    def _open(self, filename, mode):
        if mode != "r":
            return super()._open(filename, mode)
        if str(filename).endswith(".xz"):
            return lzma.open(filename, "rt", encoding=self._encoding)
        with open(filename, encoding=self._encoding) as fh:
            text = fh.read()
        for pattern, repl in _REWRITES:
            text = pattern.sub(repl, text)
        return io.StringIO(text)


def _kernel_version(tree: Path) -> str:
    """KERNELVERSION as the top Makefile computes it (shown in the .config header)."""
    try:
        head = (tree / "Makefile").read_text(errors="replace")[:2000]
    except OSError:
        return ""  # not a kernel tree's top folder (a test tree): the header just lacks it
    v = {k: (re.search(rf"^{k}[ \t]*=[ \t]*(\S*)", head, re.M) or [None, ""])[1]
         for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION")}
    return f"{v['VERSION']}.{v['PATCHLEVEL']}.{v['SUBLEVEL']}{v['EXTRAVERSION']}".rstrip(".")


def _make_env(tree: Path, arch: str) -> dict[str, str]:
    """The variables the kernel Makefile exports to Kconfig (the ones its Kconfig files use)."""
    try:
        cc_text = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    except OSError:
        cc_text = ""
    return {
        "ARCH": arch, "SRCARCH": _SRCARCH.get(arch, arch), "srctree": str(tree),
        "CC": "gcc", "LD": "ld", "HOSTCC": "gcc", "HOSTCXX": "g++", "NM": "nm",
        "OBJCOPY": "objcopy", "PAHOLE": "pahole", "RUSTC": "rustc", "BINDGEN": "bindgen",
        "CC_VERSION_TEXT": cc_text.split("\n", 1)[0], "KERNELVERSION": _kernel_version(tree),
    }


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in os.environ (kconfiglib reads it) and restore the old values after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def _parse(tree: Path, arch: str) -> tuple[_kc.Kconfig, dict]:
    """Parse the tree's Kconfig files once per process (~3 s for x86); reparse when one changed."""
    key = (str(tree), arch)
    hit = _CACHE.get(key)
    if hit and stamp.files_key(tree, hit[0].kconfig_filenames) == hit[1]["files"]:
        return hit
    if not (tree / "Kconfig").is_file():
        raise KconfigError(f"{tree}: no Kconfig file there; --tree must name a kernel source tree")
    env = _make_env(tree, arch)
    try:
        # KCONFIG_FUNCTIONS: kconfiglib's hook for preprocessor functions; ours runs $(shell).
        with _environ({**env, "KCONFIG_FUNCTIONS": "lfspass.kernel.shell"}), \
                kconfig_shell.session(tree, arch):
            kconf = _Kconfig("Kconfig", warn_to_stderr=False)  # relative: srctree is set
    except _kc.KconfigError as exc:
        msg = " ".join(str(exc).split())
        raise KconfigError(f"cannot parse the Kconfig files of {tree}: {msg}; "
                           "this kernel uses syntax lfspass does not know yet (report it)") from None
    kconf.warn_assign_override = kconf.warn_assign_redun = False
    meta = {"env": env, "files": stamp.files_key(tree, kconf.kconfig_filenames)}
    if len(_CACHE) >= 2:  # a parsed x86 tree holds ~50 MB; keep the last two trees
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (kconf, meta)
    return kconf, meta


def kernel_symbols(tree: Path, arch: str = "x86_64") -> set[str]:
    """Names of every symbol the tree's Kconfig files define."""
    kconf, _ = _parse(Path(tree).resolve(), arch)
    return {s.name for s in kconf.unique_defined_syms}


def _base_files(tree: Path, base: str | Path | None, arch: str) -> list[Path]:
    """The files a base reads, for the no-change stamp."""
    if base is None:
        return []
    if base == "tinyconfig":
        srcarch = _SRCARCH.get(arch, arch)
        return [tree / "kernel/configs/tiny-base.config", tree / "kernel/configs/tiny.config",
                tree / f"arch/{srcarch}/configs/tiny.config"]
    if base == "defconfig":
        return [tree / _DEFCONFIG.get(arch, f"arch/{_SRCARCH.get(arch, arch)}/configs/defconfig")]
    return [Path(base)]


def _load_base(kconf: _kc.Kconfig, tree: Path, base: str | Path | None, config: Path,
               arch: str) -> None:
    """Put the starting configuration in ``kconf`` (like the matching make target)."""
    kconf.unset_values()
    if base is None:
        if not config.is_file():
            raise KconfigError(f"{config}: no such config file; create it or pass --base "
                               "(tinyconfig, defconfig or a config file)")
        kconf.load_config(str(config))
        return
    files = [f for f in _base_files(tree, base, arch) if f.is_file()]
    if base == "defconfig":
        if not files:
            raise KconfigError(f"{tree}: no defconfig for ARCH={arch}; pass --base FILE instead")
        kconf.load_config(str(files[0]))
    elif base == "tinyconfig":
        # make tinyconfig = allnoconfig with tiny-base.config as KCONFIG_ALLCONFIG, written
        # out and read back, then the tiny.config fragments merged over it and olddefconfig.
        allconfig, frags = _base_files(tree, base, arch)[0], files
        if not any(f.name == "tiny.config" for f in frags):
            raise KconfigError(f"{tree}: no kernel/configs/tiny.config; pass --base defconfig or FILE")
        kconf.warn = False
        for sym in kconf.unique_defined_syms:
            sym.set_value(2 if sym.is_allnoconfig_y else 0)
        kconf.warn = True
        if allconfig.is_file():  # tiny-base.config appeared in 4.x; older trees lack it
            kconf.load_config(str(allconfig), replace=False)
            frags = [f for f in frags if f != allconfig]
        with tempfile.TemporaryDirectory() as tmp:
            kconf.write_config(os.path.join(tmp, "config"), save_old=False)
            kconf.load_config(os.path.join(tmp, "config"))
        for frag in frags:
            kconf.load_config(str(frag), replace=False)
    else:
        if not files:
            raise KconfigError(f"base config {base}: no such file; pass tinyconfig, defconfig "
                               "or an existing config file (.xz works)")
        kconf.load_config(str(files[0]))


_ASSIGN = re.compile(r'^CONFIG_([A-Za-z0-9_]+)=(.*)$|^# CONFIG_([A-Za-z0-9_]+) is not set$', re.M)


def _values(text: str) -> dict[str, str]:
    """Symbol -> value of a .config text ('n' for 'is not set', strings unquoted)."""
    out = {}
    for m in _ASSIGN.finditer(text):
        if m.group(3):
            out[m.group(3)] = "n"
        else:
            val = m.group(2)
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = _kc.unescape(val[1:-1])
            out[m.group(1)] = val
    return out


def _apply(kconf: _kc.Kconfig, wanted: dict[str, tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """Set every wanted value until nothing moves; return refusals (sym, asked, got, source)."""
    for _ in range(4):
        before = {name: kconf.syms[name].str_value for name in wanted}
        for name, (value, _src) in wanted.items():
            sym = kconf.syms[name]
            sym.set_value(tri(value) if sym.orig_type in (_kc.BOOL, _kc.TRISTATE) else value)
        if before == {name: kconf.syms[name].str_value for name in wanted}:
            break
    return [(n, v, kconf.syms[n].str_value, src) for n, (v, src) in wanted.items()
            if kconf.syms[n].str_value != v]


def configure(tree: Path, config: Path, requests: list[Request], *,
              base: str | Path | None = None, resolve: bool = False,
              arch: str = "x86_64", resolve_hint: str = "--resolve") -> ConfigResult:
    """Start from ``base`` (or ``config``), apply ``requests``, write ``config`` if it changed.

    A request that does not take effect raises KconfigError explaining the blocking
    dependency; with ``resolve`` visible symbols that unblock it are set and reported.
    ``resolve_hint`` is how the caller's user turns resolve on, quoted in refusals.
    The result is a fixed point of the kernel's ``make olddefconfig``.
    """
    tree, config = Path(tree).resolve(), Path(config)
    if base not in (None, "tinyconfig", "defconfig"):
        base = Path(base)
    old_bytes = config.read_bytes() if config.is_file() else None
    # No-change fast path: the same inputs produced exactly this file last time.
    key = stamp.inputs_key(tree=tree, arch=arch, resolve=resolve, base=base,
                           requests=sorted(map(_astuple, requests)),
                           base_files=stamp.files_key(tree, _base_files(tree, base, arch)))
    if old_bytes is not None:
        hit = stamp.hit(config, key, tree, old_bytes)
        if hit:
            return ConfigResult(False, [], *hit)

    kconf, meta = _parse(tree, arch)
    try:
        _load_base(kconf, tree, base, config, arch)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise KconfigError(f"cannot read the starting config ({base or config}): {exc}; "
                           "pass a readable .config (plain or .xz)") from None

    wanted: dict[str, tuple[str, str]] = {}
    skipped, problems = [], []
    for req in requests:
        req = Request(req.symbol.removeprefix("CONFIG_"), req.value, req.source, req.optional)
        sym = kconf.syms.get(req.symbol)
        if req.optional and (sym is None or not sym.nodes):
            skipped.append((req.symbol, f"not in this kernel tree (optional, from {req.source})"))
            continue
        bad = check_request(kconf, req.symbol, req.value, req.source)
        if bad:
            problems.append(bad)
        elif req.symbol in wanted and wanted[req.symbol][0] != req.value:
            problems.append(f"{req.symbol}: {wanted[req.symbol][1]} asks {wanted[req.symbol][0]} "
                            f"but {req.source} asks {req.value}; make them agree")
        else:
            wanted.setdefault(req.symbol, (req.value, req.source))
    if problems:
        raise KconfigError("; ".join(problems))

    resolved: list[tuple[str, str, str]] = []
    refused = _apply(kconf, wanted)
    # --resolve: set the visible symbols that unblock a refusal, a few levels deep.
    for _ in range(8 if resolve else 0):
        added = False
        for name, asked, _got, src in refused:
            for dep, value in fixes(kconf.syms[name], asked) or []:
                if dep.name not in wanted:
                    why = f"needed by {name}={asked}"
                    wanted[dep.name] = (value, f"resolve, {why}")
                    resolved.append((dep.name, value, why))
                    added = True
        if not added:
            break
        refused = _apply(kconf, wanted)
    if refused:
        raise KconfigError("; ".join(explain(kconf.syms[n], asked, got, src,
                                             None if resolve else resolve_hint)
                                     for n, asked, got, src in refused))

    # Header as the kernel's conf writes it, so the file matches `make olddefconfig` byte for byte.
    header = f"#\n# Automatically generated file; DO NOT EDIT.\n# {kconf.mainmenu_text}\n#\n"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "config")
        kconf.write_config(out, header=header, save_old=False)
        new_bytes = Path(out).read_bytes()
    changed = write_atomic(config, new_bytes)
    old = _values(old_bytes.decode(errors="replace")) if old_bytes is not None else {}
    new = _values(new_bytes.decode(errors="replace"))
    changes = [(s, old.get(s, ""), new.get(s, "")) for s in sorted(old.keys() | new.keys())
               if old.get(s, "") != new.get(s, "")]
    stamp.record(config, key, new_bytes, kconf.kconfig_filenames, meta["files"], skipped, resolved)
    return ConfigResult(changed, changes, skipped, resolved)


def _astuple(req: Request) -> tuple[str, str, str, bool]:
    return (req.symbol, req.value, req.source, req.optional)
