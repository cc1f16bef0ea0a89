"""kconfiglib's view of a refusal: the reason (worded by refusal_text.py), and which visible symbols would unblock it."""
from __future__ import annotations

import kconfiglib as _kc

from lfspass.kernel.kconfig import refusal_text as text
from lfspass.kernel.kconfig.fix_plan import plan

_TRI = {"n": 0, "m": 1, "y": 2}
_MAX_FIXES = 12  # per refusal: a dependency needing more than this is a design choice, not a fix


def tri(value: str) -> int:
    """'n'/'m'/'y' -> 0/1/2 (kconfiglib's tristate numbers)."""
    return _TRI[value]


def _loc(sym: _kc.Symbol) -> str:
    node = sym.nodes[0]
    return f"{node.filename}:{node.linenr}"


def _term_str(expr) -> str:
    """``expr`` followed by the current value of each symbol in it: ``A && B [A=y, B=n]``."""
    items = [s for s in _kc.expr_items(expr) if s.__class__ is _kc.Symbol and not s.is_constant]
    vals = ", ".join(f"{s.name}={s.str_value}" if s.nodes else f"{s.name} not defined for this architecture"
                     for s in dict.fromkeys(items))
    return f"{_kc.expr_str(expr)} [{vals}]" if vals else _kc.expr_str(expr)


def _failing(expr, want: int) -> list:
    """The top-level && terms of ``expr`` whose value is below ``want``."""
    return [t for t in _kc.split_expr(expr, _kc.AND) if _kc.expr_value(t) < want]


def _selectors(sym: _kc.Symbol) -> list:
    return [t for t in _kc.split_expr(sym.rev_dep, _kc.OR) if _kc.expr_value(t)]


def _selecting(sym: _kc.Symbol, terms: list) -> list[str]:
    """The symbols whose ``select``/``imply`` lines put ``sym`` on in ``terms`` (not the conditions)."""
    names = [s.name for term in terms for s in _kc.expr_items(term)
             if s.__class__ is _kc.Symbol and any(t is sym for n in s.nodes for t, _c in n.selects)]
    return list(dict.fromkeys(names)) or [_kc.expr_str(t) for t in terms]


def _need(sym: _kc.Symbol, want: int) -> int:
    """The dependency value ``sym`` needs to reach ``want``.

    Kconfig promotes an m visibility to y for a bool, so a bool depending on a
    module (VFIO_PCI_VGA on VFIO_PCI=m) can still be y: asking its dependencies
    for y would needlessly turn modules into built-ins.
    """
    return 1 if want == 2 and sym.orig_type is _kc.BOOL else want


def _blockers(sym: _kc.Symbol, want: int) -> tuple[str, list]:
    """(what limits ``sym`` below ``want``, the failing terms) for a too-low value."""
    want = _need(sym, want)
    bad = _failing(sym.direct_dep, want)
    if bad:
        return text.DEPENDS, bad
    prompts = [n.prompt[1] for n in sym.nodes if n.prompt]
    if not prompts:
        return text.NO_PROMPT, []
    bad = [t for cond in prompts for t in _failing(cond, want)]
    if bad:
        return text.OFFERED_IF, bad
    if sym.choice is not None and _kc.expr_value(sym.choice.direct_dep) < want:
        return text.CHOICE_DEPENDS, _failing(sym.choice.direct_dep, want)
    picked = sym.choice.selection if sym.choice is not None else None
    if picked is not None and picked is not sym:
        return text.other_member(picked.name), []
    return text.LIMITED, []


def explain(sym: _kc.Symbol, asked: str, got: str, source: str, hint: str | None, arch: str = "x86_64") -> str:
    """One line: ``SYM=asked refused (got X): <reason> (file:line); <what to do>``.

    ``hint`` names the resolve switch where the caller can turn it on (``--resolve`` on the
    command line, ``[kernel] resolve = true`` in a recipe); None when resolve already ran.
    """
    first, where = text.head(sym.name, asked, source, got), _loc(sym)
    if sym.orig_type not in (_kc.BOOL, _kc.TRISTATE):
        if not sym.visibility:
            reason, bad = _blockers(sym, 2)
            return _advice(text.blocked(first, reason, [_term_str(t) for t in bad], where), sym, "y", arch, hint)
        ranges = [f"{lo.str_value}..{hi.str_value}" for lo, hi, cond in sym.ranges
                  if _kc.expr_value(cond)]
        return text.out_of_range(first, ranges, where)
    want, have = tri(asked), sym.tri_value
    if want < have:
        sel = _selectors(sym)
        if sel:
            return text.selected(first, [_term_str(t) for t in sel], where, _selecting(sym, sel))
        if sym.choice is not None:
            return text.chosen_member(first, where)
        if asked == "m" and not sym.kconfig.modules.tri_value:
            return text.modules_off(first, where, hint)
        return text.default_wins(first, where)
    reason, bad = _blockers(sym, want)
    return _advice(text.blocked(first, reason, [_term_str(t) for t in bad], where), sym, asked, arch, hint)


def _advice(line: str, sym: _kc.Symbol, asked: str, arch: str, hint: str | None) -> str:
    """Append the lines that let ``sym`` take ``asked`` on ``arch``, or why it cannot (fix_plan.py)."""
    got = plan(sym, asked, arch)
    return text.with_advice(line, got.lines, got.why_not, arch, hint)


def _settable(sym) -> bool:
    """A symbol resolve may turn on: defined here, visible, a plain bool/tristate switch, no test option."""
    return (sym.__class__ is _kc.Symbol and not sym.is_constant and bool(sym.nodes)
            and sym.orig_type in (_kc.BOOL, _kc.TRISTATE) and sym.name not in text.NEVER
            and any(n.prompt for n in sym.nodes)
            and not any(n.prompt and text.TESTING.search(n.prompt[0]) for n in sym.nodes))


def _fix(expr, want: int) -> list | None:
    """Assignments (Symbol, value) that raise ``expr`` to ``want``; None when none will."""
    if _kc.expr_value(expr) >= want:
        return []
    if expr.__class__ is not tuple:
        if not _settable(expr):
            return None
        return [(expr, "m" if want == 1 and expr.orig_type is _kc.TRISTATE else "y")]
    op = expr[0]
    if op is _kc.AND:
        left, right = _fix(expr[1], want), _fix(expr[2], want)
        return None if left is None or right is None else left + right
    if op is _kc.OR:
        # The side needing the fewest changes (an already satisfied side needs none).
        sides = [got for got in (_fix(expr[1], want), _fix(expr[2], want)) if got is not None]
        return min(sides, key=len) if sides else None
    # Never a fix that turns something off (`!X`, `X = n`): that is the user's decision.
    if op is _kc.EQUAL and _settable(expr[1]) and expr[2].is_constant and expr[2].name in ("y", "m") \
            and expr[1].tri_value < _TRI[expr[2].name]:
        return [(expr[1], expr[2].name)]
    return None


def fixes(sym: _kc.Symbol, asked: str) -> list | None:
    """Visible symbols to set so ``sym`` can take ``asked``; None when no simple fix exists."""
    boolish = sym.orig_type in (_kc.BOOL, _kc.TRISTATE)
    want = tri(asked) if boolish else 2
    if boolish and sym.tri_value > want:
        modules = sym.kconfig.modules
        if asked == "m" and not modules.tri_value and _settable(modules):
            return [(modules, "y")]
        return None  # selected or a promptless default: nothing to switch on fixes that
    _, bad = _blockers(sym, want)
    out: list = []
    for term in bad:
        got = _fix(term, _need(sym, want))
        if got is None:
            return None
        out += got
    return out if len(out) <= _MAX_FIXES else None
