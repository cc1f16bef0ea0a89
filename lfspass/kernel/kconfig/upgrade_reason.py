"""Why a carried value moved in the new tree, read from the symbol's own Kconfig lines (no kconfiglib).

The upgrade report (upgrade_report.py) gives every move a reason.  The lines symbols.py reads
say enough for the reasons an upgrade has: a dependency now unmet (often on a symbol new in
this tree, NETFILTER_XTABLES_LEGACY in 7.x), a type that no longer takes m, a selector that
turned it on, a new symbol's default, a symbol removed or renamed.  Reading lines keeps the
report off kconfiglib's ~2 s parse, so carrying a config costs what the kernel's conf costs.
"""
from __future__ import annotations

from lfspass.kernel.kconfig import refusal_text as text
from lfspass.kernel.kconfig import symbols
from lfspass.kernel.kconfig.explain_lines import evaluate

_TRI = {"n": 0, "m": 1, "y": 2}


def _on(value: str) -> bool:
    return _TRI.get(value or "n", 0) > 0


def _selectors(sym: symbols.Sym, got: dict[str, str]) -> list[str]:
    """``S`` or ``S if C`` for each symbol that selects ``sym`` in the result."""
    return [s + (f" if {c}" if c else "") for s, c, _w in sym.selected_by
            if _on(got.get(s, "n")) and (not c or (evaluate(c, got) or 0) > 0)]


def _unmet(src: symbols.Source, sym: symbols.Sym, want: int, got: dict[str, str],
           start: dict[str, str]) -> str:
    """The dependency lines below ``want`` in the result, with values; '' when all hold."""
    bad = [(e, w) for e, w in sym.depends if (evaluate(e, got) or 0) < want]
    if not bad:
        return ""
    names = list(dict.fromkeys(n for e, _w in bad for n in symbols.names_in(e)))
    shown = " && ".join(f"{e} ({w})" for e, w in bad)
    vals = ", ".join(f"{n}={got.get(n, 'n')}" for n in names if n in src.syms)
    fresh = [n for n in names if n in src.syms and n not in start]
    return (f"{text.DEPENDS} {shown}" + (f" [{vals}]" if vals else "")
            + (f"; new in this tree: {', '.join(fresh)}" if fresh else ""))


def reason(src: symbols.Source, name: str, old: str, new: str, start: dict[str, str], got: dict[str, str]) -> str:
    """Why ``name`` went from ``old`` (the carried config's) to ``new`` (the result's)."""
    sym = src.syms.get(name)
    if sym is None:
        return "not in this tree (removed or renamed)"
    if sym.type not in ("bool", "tristate"):
        if old in _TRI:
            article = "an" if sym.type[:1] in "aeiou" else "a"
            return f"{article} {sym.type} in this tree (it was a switch): its default {new or 'unset'}"
        unmet = _unmet(src, sym, 1, got, start)
        if unmet:
            return unmet
        return "its default in this tree" if not sym.prompt else "kept within its range or default"
    was, now = _TRI.get(old or "n", 0), _TRI.get(new or "n", 0)
    if now < was:
        if sym.type == "bool" and old == "m":
            return "a bool in this tree: m is not a value it takes"
        unmet = _unmet(src, sym, 1 if sym.type == "bool" else was, got, start)
        if unmet:
            return unmet
        if not sym.prompt:
            return "its default is lower now" if _selectors(sym, got) else "no prompt, and nothing selects it now"
        if sym.choice:
            return text.other_member(None)
        return text.LIMITED
    sel = _selectors(sym, got)
    if sel:
        return f"selected by {' || '.join(sel)}"
    if name not in start:
        return f"new in this tree, default {new}"
    return "its default in this tree" if not sym.prompt else "implied or defaulted on"
