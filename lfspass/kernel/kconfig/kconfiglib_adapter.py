"""The one adapter over kconfiglib: parse a tree (newer syntax rewritten), explain and resolve requests.

kconfiglib never writes a .config (the kernel's own conf does, conf_runner.py, on every tree); it
explains refusals and finds what --resolve sets.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kconfiglib as _kc

from lfspass.errors import KconfigError
from lfspass.kernel.kconfig import kconfiglib_shell
from lfspass.kernel.kconfig import input_stamp
from lfspass.kernel.kconfig.conf_runner import SRCARCH
from lfspass.kernel.kconfig.request_check import holds
from lfspass.kernel.kconfig.result import Resolved
from lfspass.kernel.release import makefile_version
from lfspass.kernel.kconfig.explain_kconfiglib import explain, fixes, tri

# Kconfiglib 14.1.0 (2020) predates syntax newer kernels use.  We rewrite those lines
# while reading, so the installed library stays untouched:
#   5.13: `option modules` became a bare `modules` line (kernel/module/Kconfig);
#   6.18: `transitional` marks a renamed symbol's old name: its value is read from an old
#         .config (the new symbol defaults to it) and never written.  A prompt makes
#         kconfiglib keep the value it reads; the prompt text keeps resolve off it;
#   7.x:  `depends on A if B` (conditional dependency) means `A || B = n` (menu.c).
_TRANSITIONAL = "transitional (lfspass)"
_REWRITES = (
    (re.compile(r"^([ \t]+)modules[ \t]*(#.*)?$", re.M), r"\1option modules"),
    (re.compile(r"^([ \t]+)transitional[ \t]*(#.*)?$", re.M), rf'\1prompt "{_TRANSITIONAL}"'),
)
_COND_DEP = re.compile(r"^([ \t]+depends[ \t]+on[ \t]+)([^#\n]+?)[ \t]+if[ \t]+([^#\n]+?)[ \t]*(#.*)?$", re.M)


def _cond_dep(m: re.Match) -> str:
    cond = m.group(3).strip()
    neg = f"{cond} = n" if re.fullmatch(r"\w+", cond) else f"!({cond})"
    return f"{m.group(1)}({m.group(2)}) || ({neg})"


_CACHE: dict[tuple[str, str], tuple[_kc.Kconfig, dict]] = {}


class _Kconfig(_kc.Kconfig):
    """Kconfig that reads newer kernels' syntax."""

    def _open(self, filename, mode):
        if mode != "r":
            return super()._open(filename, mode)
        with open(filename, encoding=self._encoding) as fh:
            text = fh.read()
        for pattern, repl in _REWRITES:
            text = pattern.sub(repl, text)
        text = _COND_DEP.sub(_cond_dep, text)
        return io.StringIO(text)


def _make_env(tree: Path, arch: str) -> dict[str, str]:
    """The variables the kernel Makefile exports to Kconfig (the ones its Kconfig files use)."""
    try:
        cc_text = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    except OSError:
        cc_text = ""
    return {
        "ARCH": arch, "SRCARCH": SRCARCH.get(arch, arch), "srctree": str(tree),
        "CC": "gcc", "LD": "ld", "HOSTCC": "gcc", "HOSTCXX": "g++", "NM": "nm",
        "OBJCOPY": "objcopy", "PAHOLE": "pahole", "RUSTC": "rustc", "BINDGEN": "bindgen",
        "CC_VERSION_TEXT": cc_text.split("\n", 1)[0], "KERNELVERSION": makefile_version(tree),
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
    if hit and input_stamp.files_key(tree, hit[0].kconfig_filenames) == hit[1]["files"]:
        return hit
    if not (tree / "Kconfig").is_file():
        raise KconfigError(f"{tree}: no Kconfig file there; --tree must name a kernel source tree")
    env = _make_env(tree, arch)
    try:
        # KCONFIG_FUNCTIONS: kconfiglib's hook for preprocessor functions; ours runs $(shell).
        with _environ({**env, "KCONFIG_FUNCTIONS": "lfspass.kernel.kconfig.kconfiglib_shell"}), \
                kconfiglib_shell.session(tree, arch):
            kconf = _Kconfig("Kconfig", warn_to_stderr=False)  # relative: srctree is set
    except _kc.KconfigError as exc:
        msg = " ".join(str(exc).split())
        raise KconfigError(f"cannot parse the Kconfig files of {tree}: {msg}; "
                           "this tree uses Kconfig syntax kconfiglib does not know") from None
    kconf.warn_assign_override = kconf.warn_assign_redun = False
    meta = {"env": env, "files": input_stamp.files_key(tree, kconf.kconfig_filenames)}
    if len(_CACHE) >= 2:  # a parsed x86 tree holds ~50 MB; keep the last two trees
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (kconf, meta)
    return kconf, meta


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
            if not holds(_kc.TYPE_TO_STR[kconf.syms[n].orig_type], v, kconf.syms[n].str_value)]


def _resolve_loop(kconf: _kc.Kconfig, wanted: dict[str, tuple[str, str]],
                  resolve: bool) -> tuple[list, list[Resolved]]:
    """Apply ``wanted``; with ``resolve`` add the settable symbols that unblock refusals.

    Returns (refusals, what resolve set).
    """
    resolved: list[Resolved] = []
    refused = _apply(kconf, wanted)
    for _ in range(8 if resolve else 0):
        added = False
        for name, asked, _got, _src in refused:
            for dep, value in fixes(kconf.syms[name], asked) or []:
                if dep.name not in wanted:
                    why = f"needed by {name}={asked}"
                    wanted[dep.name] = (value, f"resolve, {why}")
                    resolved.append(Resolved(dep.name, value, why))
                    added = True
        if not added:
            break
        refused = _apply(kconf, wanted)
    return refused, resolved


def _load_text(kconf: _kc.Kconfig, text: str) -> None:
    kconf.unset_values()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config").write_text(text)
        kconf.load_config(os.path.join(tmp, "config"))


def resolve_extra(tree: Path, arch: str, start: str, wanted: dict[str, tuple[str, str]]) -> list[Resolved]:
    """What --resolve adds for a kernel tree, found on ``start`` + ``wanted``."""
    kconf, _ = _parse(tree, arch)
    _load_text(kconf, start)
    return _resolve_loop(kconf, dict(wanted), True)[1]


def explain_all(tree: Path, arch: str, result: str, refused: list, hint: str | None,
                target: str | None = None) -> list[str]:
    """One explanation per refusal (sym, asked, got, source), read on the result config;
    ``target`` names the architecture in the advice (x86_64 where Kconfig's ARCH is x86)."""
    kconf, _ = _parse(tree, arch)
    _load_text(kconf, result)
    out = []
    for name, asked, got, src in refused:
        sym = kconf.syms.get(name)
        out.append(explain(sym, asked, got, src, hint, target or arch) if sym is not None and sym.nodes else "")
    return out
