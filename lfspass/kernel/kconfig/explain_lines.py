"""A refusal explained from the symbol's own Kconfig lines (file:line), for trees kconfiglib cannot read.

Reads symbols.py's view of the tree and the values the result config gives; the sentence is
refusal_text.py's, the same one explain_kconfiglib.py's analysis ends in.
"""
from __future__ import annotations

import operator
import re

from lfspass.kernel.kconfig import refusal_text as text
from lfspass.kernel.kconfig import symbols

_TRI = {"n": 0, "m": 1, "y": 2}


def explain(src: symbols.Source, name: str, asked: str, got: str, source: str,
            values: dict[str, str], hint: str | None, arch: str = "x86_64") -> str:
    """Why ``name`` did not take ``asked``, from its Kconfig lines (file:line) and the result's values."""
    sym = src.syms[name]
    first = text.head(name, asked, source, got)

    def shown(expr: str) -> str:
        names = symbols.names_in(expr)
        vals = ", ".join(f"{n}={values.get(n, 'n')}" + ("" if n in src.syms else " (not defined for this architecture)")
                         for n in names)
        return f"{expr} [{vals}]" if vals else expr

    if sym.type in ("bool", "tristate") and _TRI.get(got or "n", 0) > _TRI.get(asked, 0):
        sel = [(s, c, w) for s, c, w in sym.selected_by
               if _TRI.get(values.get(s, "n"), 0) and (not c or evaluate(c, values))]
        if sel:
            return text.selected(first, [f"{s} [{s}={values.get(s)}]" + (f" if {c}" if c else "") for s, c, _w in sel],
                                 ", ".join(w for _s, _c, w in sel), list(dict.fromkeys(s for s, _c, _w in sel)))
        if sym.choice:
            return text.chosen_member(first, sym.defs[0])
        if asked == "m" and values.get("MODULES", "n") != "y":
            return text.modules_off(first, sym.defs[0], hint)
        return text.default_wins(first, sym.defs[0])
    want = 1 if sym.type == "bool" or asked == "m" else 2
    bad = [(e, w) for e, w in sym.depends if (evaluate(e, values) or 0) < want]
    if bad:
        line = text.blocked(first, text.DEPENDS, [f"{shown(e)} ({w})" for e, w in bad], "")
        lines, why_not = _advice(src, sym, [e for e, _w in bad], want, values, arch)
        return text.with_advice(line, lines, why_not, arch, hint)
    if not sym.prompt:
        return text.blocked(first, text.NO_PROMPT, [], ", ".join(sym.defs))
    if sym.ranges:
        active = [(r, w) for r, w in sym.ranges if _range_applies(r, values)] or sym.ranges
        return text.out_of_range(first, [_bounds(r, values) for r, _w in active], ", ".join(w for _r, w in active))
    if sym.choice:
        return text.blocked(first, text.other_member(None), [], sym.defs[0])
    return text.blocked(first, text.LIMITED, [], ", ".join(sym.defs))


def _advice(src: symbols.Source, sym: symbols.Sym, bad: list[str], want: int, values: dict[str, str],
            arch: str) -> tuple[list[tuple[str, str]], str]:
    """One level of advice from the lines alone: the too-low switches in the failing terms that have
    a prompt here and are no test option (unless ``sym`` is one); else why the request cannot hold."""
    testing = lambda s: bool(text.TESTING.search(s.prompt_text))  # noqa: E731
    names = sorted({n for e in bad for n in _positive(e) if _TRI.get(values.get(n, "n"), 0) < want})
    ok = [n for n in names if n in src.syms and src.syms[n].prompt and n not in text.NEVER
          and (not testing(src.syms[n]) or testing(sym))]
    if ok:
        return [(n, "m" if want == 1 and src.syms[n].type == "tristate" else "y") for n in ok], ""
    never = [n for n in names if n in text.NEVER]
    if never:
        return [], text.only_never(never)
    why = [f"{n} is not defined for {arch}" if n not in src.syms else f"{n} has no prompt" if not src.syms[n].prompt
           else f"{n} is a test or debugging option" for n in names]
    return [], ", ".join(why) if why else ""


def _range_applies(rng: str, values: dict[str, str]) -> bool:
    """Whether ``lo hi [if cond]`` is in force (its condition holds or cannot be read)."""
    _bounds_part, sep, cond = rng.partition(" if ")
    value = evaluate(cond, values) if sep else 2
    return value is None or value > 0


def _bounds(rng: str, values: dict[str, str]) -> str:
    """``lo..hi`` of a range line, symbols replaced by their values in the result."""
    words = rng.partition(" if ")[0].split()
    return "..".join(values.get(w, w) for w in words[:2]) if len(words) >= 2 else rng


def evaluate(expr: str, values: dict[str, str]) -> int | None:
    """Kconfig tristate value (0/1/2) of ``expr`` over ``values``; None when it cannot be read."""
    toks = re.findall(r"\"[^\"]*\"|'[^']*'|&&|\|\||!=|<=|>=|[!()=<>]|[A-Za-z0-9_$.-]+", expr)
    pos = [0]

    def val(tok: str) -> str:
        return tok[1:-1] if tok[:1] in "\"'" else values.get(tok, tok if tok in _TRI or tok[:1].isdigit() else "n")

    def atom() -> int:
        tok = toks[pos[0]]
        pos[0] += 1
        if tok == "!":
            return 2 - atom()
        if tok == "(":
            v = orx()
            pos[0] += 1
            return v
        if pos[0] < len(toks) and toks[pos[0]] in ("=", "!=", "<", ">", "<=", ">="):
            op, rhs = toks[pos[0]], val(toks[pos[0] + 1])
            pos[0] += 2
            return 2 if _compare(op, val(tok), rhs) else 0
        return _TRI.get(val(tok), 0)

    def andx() -> int:
        v = atom()
        while pos[0] < len(toks) and toks[pos[0]] == "&&":
            pos[0] += 1
            v = min(v, atom())
        return v

    def orx() -> int:
        v = andx()
        while pos[0] < len(toks) and toks[pos[0]] == "||":
            pos[0] += 1
            v = max(v, andx())
        return v

    try:
        return orx()
    except (IndexError, KeyError, TypeError):
        return None


_ORDER = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


def _compare(op: str, lhs: str, rhs: str) -> bool:
    """A Kconfig comparison: = and != on the text, the order numerically where both sides are numbers."""
    if op in ("=", "!="):
        return (lhs == rhs) == (op == "=")
    try:
        return bool(_ORDER[op](int(lhs, 0), int(rhs, 0)))
    except ValueError:
        return bool(_ORDER[op](lhs, rhs))


def _positive(expr: str) -> list[str]:
    """Names in ``expr`` that must be on to satisfy it (not under a `!`, not compared)."""
    expr = re.sub(r"!\s*\([^()]*\)|!\s*\w+|\w+\s*!?=\s*\w+", " ", expr)
    return symbols.names_in(expr)
