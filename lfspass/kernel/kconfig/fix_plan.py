"""What a refused request needs, as concrete ``SYMBOL=value`` lines that can hold on this arch.

A suggestion is made only of symbols that have a prompt here (so a .config line sets them) and
whose own dependencies can be met the same way, followed down the chain; a promptless symbol
is reached through its default or a selecting symbol that can be set.  When no such chain
exists the answer is the reason the request cannot hold on this architecture (a symbol not
defined here, one with no prompt that nothing settable selects, or one only COMPILE_TEST,
EXPERT or a test option would allow).  Resolve (kconfiglib_adapter.py) keeps its own, stricter
search; this one only words the advice.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import kconfiglib as _kc

from lfspass.kernel.kconfig import refusal_text as text

_TRI = {"n": 0, "m": 1, "y": 2}
_DEPTH = 6        # dependency levels followed; deeper chains are a design choice, not a fix
_MAX_LINES = 12   # the same limit resolve has


@dataclass
class Plan:
    """``lines`` (in order, dependencies first) when the request can hold; else ``why_not``."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    why_not: str = ""

    @property
    def possible(self) -> bool:
        return not self.why_not


def _need(sym: _kc.Symbol, want: int) -> int:
    # A bool depending on a module can still be y (Kconfig promotes m visibility for a bool).
    return 1 if want == 2 and sym.orig_type is _kc.BOOL else want


class _Search:
    def __init__(self, arch: str, allow_testing: bool) -> None:
        self.arch, self.allow_testing = arch, allow_testing
        self.lines: dict[str, str] = {}      # symbol name -> value, in the order they are needed

    def _testing(self, sym: _kc.Symbol) -> bool:
        return any(n.prompt and text.TESTING.search(n.prompt[0]) for n in sym.nodes)

    def raise_sym(self, sym: _kc.Symbol, want: int, depth: int) -> str:
        """Plan ``sym`` up to ``want``; '' when planned, else why it cannot be."""
        if sym.__class__ is not _kc.Symbol:
            return "a choice must be set through its members"
        planned = self.lines.get(sym.name)
        if (_TRI[planned] if planned else sym.tri_value) >= want:
            return ""
        if sym.is_constant:
            return f"the constant {sym.name} is fixed"
        if not sym.nodes:
            return f"{sym.name} is not defined for {self.arch}"
        if sym.name in text.NEVER:
            return text.only_never([sym.name])
        if depth > _DEPTH:
            return f"{sym.name} sits more than {_DEPTH} dependency levels down"
        if sym.orig_type not in (_kc.BOOL, _kc.TRISTATE):
            return f"{sym.name} is a {_kc.TYPE_TO_STR[sym.orig_type]} symbol"
        prompts = [n for n in sym.nodes if n.prompt]
        if not prompts:
            return self._promptless(sym, want, depth)
        if self._testing(sym) and not self.allow_testing:
            return f"{sym.name} is a test or debugging option"
        need = _need(sym, want)
        for expr in (sym.direct_dep, *[n.prompt[1] for n in prompts]):
            why = self.raise_expr(expr, need, depth + 1)
            if why:
                return why
        if sym.choice is not None:
            return f"{sym.name} sits in a choice: set it alone"
        value = "m" if want == 1 and sym.orig_type is _kc.TRISTATE else "y"
        self.lines[sym.name] = value
        return ""

    def _trial(self) -> _Search:
        trial = _Search(self.arch, self.allow_testing)
        trial.lines = dict(self.lines)
        return trial

    def _promptless(self, sym: _kc.Symbol, want: int, depth: int) -> str:
        """A symbol set only by a default or a select: plan the cheapest of those that can hold."""
        tries = []
        for val, cond in sym.defaults:   # a default holds within the symbol's own dependencies
            trial = self._trial()
            if not (trial.raise_expr(sym.direct_dep, _need(sym, want), depth + 1)
                    or trial.raise_expr(val, want, depth + 1) or trial.raise_expr(cond, 1, depth + 1)):
                tries.append(trial.lines)
        for term in _kc.split_expr(sym.rev_dep, _kc.OR):   # a select ignores them
            trial = self._trial()
            if term is not sym.kconfig.n and not trial.raise_expr(term, want, depth + 1):
                tries.append(trial.lines)
        if not tries:
            return f"{sym.name} has no prompt, and nothing that can be set on {self.arch} selects it or turns it on"
        self.lines = min(tries, key=len)
        return ""

    def raise_expr(self, expr, want: int, depth: int) -> str:
        if _kc.expr_value(expr) >= want:
            return ""
        if expr.__class__ is not tuple:
            return self.raise_sym(expr, want, depth)
        op = expr[0]
        if op is _kc.AND:
            # What must be on first: whether a switch can go off depends on what selects it then.
            terms = sorted(_kc.split_expr(expr, _kc.AND), key=lambda t: t.__class__ is tuple and t[0] is _kc.NOT)
            return next((why for t in terms if (why := self.raise_expr(t, want, depth))), "")
        if op is _kc.OR:
            tries, whys = [], []
            for side in (expr[1], expr[2]):
                trial = self._trial()
                why = trial.raise_expr(side, want, depth)
                if why:
                    whys.append(why)
                else:
                    tries.append(trial.lines)
            if not tries:
                return ", ".join(dict.fromkeys(", ".join(whys).split(", ")))
            self.lines = min(tries, key=len)
            return ""
        if op is _kc.NOT:
            return self._lower(expr[1], want, depth)
        if op in (_kc.EQUAL, _kc.UNEQUAL) and expr[2].is_constant and expr[2].name in _TRI:
            name = expr[2].name
            if op is _kc.EQUAL and name != "n":      # X = y, X = m
                return self.raise_sym(expr[1], _TRI[name], depth)
            if op is _kc.UNEQUAL and name == "n":    # X != n: X on
                return self.raise_sym(expr[1], 1, depth)
            return self._lower(expr[1], want, depth)  # X = n, X != y: X off
        return f"{_kc.expr_str(expr)} is a comparison this advice does not solve"

    def _lower(self, expr, want: int, depth: int) -> str:
        """``!X`` / ``X = n``: X off, when X is a plain switch nothing selects (the user's choice)."""
        if expr.__class__ is not _kc.Symbol or not expr.nodes or not any(n.prompt for n in expr.nodes):
            return f"{_kc.expr_str(expr)} would have to be off, and it is not a switch"
        with applied(expr.kconfig, self.lines):
            selected = _kc.expr_value(expr.rev_dep)
        if selected:
            return f"{expr.name} would have to be off, and it is selected ({_kc.expr_str(expr.rev_dep)})"
        self.lines[expr.name] = "n"
        return ""


@contextmanager
def applied(kconf: _kc.Kconfig, lines: dict[str, str]) -> Iterator[None]:
    """kconfiglib's view with ``lines`` set as a .config would set them; the old values after."""
    saved = {name: kconf.syms[name].user_value for name in lines}
    try:
        for name, value in lines.items():
            kconf.syms[name].set_value(_TRI[value])
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                kconf.syms[name].unset_value()
            else:
                kconf.syms[name].set_value(old)


def plan(sym: _kc.Symbol, asked: str, arch: str) -> Plan:
    """The lines that let ``sym`` take ``asked`` (a bool/tristate refused as too low), or why none can."""
    want = _TRI[asked]
    search = _Search(arch, allow_testing=bool(sym.nodes) and any(
        n.prompt and text.TESTING.search(n.prompt[0]) for n in sym.nodes))
    need = _need(sym, want)
    for expr in (sym.direct_dep, *[n.prompt[1] for n in sym.nodes if n.prompt]):
        why = search.raise_expr(expr, need, 1)
        if why:
            return Plan(why_not=why)
    lines = list(search.lines.items())
    if len(lines) > _MAX_LINES:
        return Plan(why_not=f"it needs {len(lines)} other symbols set ({', '.join(n for n, _ in lines[:4])}, ...)")
    # Checked, not assumed: with the lines set, kconfiglib must let the symbol take the value
    # (a number or string symbol: must be visible, so that its line is read).
    if sym.orig_type in (_kc.BOOL, _kc.TRISTATE):
        with applied(sym.kconfig, {**search.lines, sym.name: asked}):
            holds = sym.tri_value >= want
    else:
        with applied(sym.kconfig, search.lines):
            holds = sym.visibility > 0
    if not holds:
        return Plan(why_not="no set of switches found that lets it hold (" +
                    (", ".join(f"{n}={v}" for n, v in lines) or "nothing to switch") + " is not enough)")
    return Plan(lines=lines)
