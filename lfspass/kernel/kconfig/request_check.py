"""Requests against a tree's symbols: known symbol, a value conf can be asked, the .config line, held in the result.

Everything here reads symbols.py's index of the tree (no kconfiglib), so it works on kernels
whose syntax kconfiglib does not know.  ``holds`` is the one value check, kconfiglib's side included.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping

from lfspass.errors import KconfigError
from lfspass.kernel.kconfig import symbols
from lfspass.kernel.kconfig.result import Skipped
from lfspass.model import Request


def unwritable(kind: str, value: str) -> str | None:
    """Why ``value`` cannot go to conf as asked; None when conf may judge it.

    conf judges numbers itself (symbol.c sym_string_valid: no leading zeros, the form of a
    hex) and its refusal is reported in its words (refusal_text.form_hint adds what to write).  Checked
    here only what conf would misread rather than refuse: it takes a bool or tristate
    from the first letter ("yes" is y), and a line break would end the .config line.
    """
    if kind == "bool" and value not in ("y", "n"):
        return "bool symbol takes y, n"
    if kind == "tristate" and value not in ("y", "m", "n"):
        return "tristate symbol takes y, m, n"
    if "\n" in value or "\r" in value:
        return f"{kind or 'a'} symbol takes one line"
    return None


def check_requests(kinds: Mapping[str, symbols.Kind],
                   requests: list[Request]) -> tuple[dict[str, tuple[str, str]], list[Skipped]]:
    """(symbol -> (value, source), skipped optional ones); raises on unknown symbols, bad values, conflicts."""
    wanted: dict[str, tuple[str, str]] = {}
    skipped: list[Skipped] = []
    problems: list[str] = []
    for req in requests:
        sym = kinds.get(req.symbol)
        if sym is None or sym.transitional:
            if req.optional:
                skipped.append(Skipped(req.symbol, f"not in this kernel tree (optional, from {req.source})"))
                continue
            if sym is not None:
                problems.append(f"{req.symbol} (from {req.source}): an old name this tree keeps only to read old "
                                f"configs (transitional, {sym.where}); request the symbol that replaced it")
                continue
            close = difflib.get_close_matches(req.symbol, list(kinds), n=3, cutoff=0.75)
            hint = f"did you mean {' or '.join(close)}?" if close else "check the name (no CONFIG_ prefix)"
            problems.append(f"{req.symbol} (from {req.source}): no such symbol in this kernel tree; {hint}")
            continue
        bad = unwritable(sym.type, req.value)
        if bad:
            problems.append(f"{req.symbol}={req.value} (from {req.source}): {bad}")
        elif conflict := agree(wanted, req):
            problems.append(conflict)
    if problems:
        raise KconfigError("; ".join(problems))
    return wanted, skipped


def agree(wanted: dict[str, tuple[str, str]], req: Request) -> str:
    """Record ``req`` in ``wanted`` (symbol -> (value, source)); a clash with an earlier request is returned."""
    earlier = wanted.setdefault(req.symbol, (req.value, req.source))
    if earlier[0] != req.value:
        return f"{req.symbol}: {earlier[1]} asks {earlier[0]} but {req.source} asks {req.value}; make them agree"
    return ""


def request_line(name: str, kind: str, value: str) -> str:
    """The .config line that asks conf for ``value`` of ``name``, a ``kind`` (bool, string...) symbol."""
    if kind in ("bool", "tristate") and value == "n":
        return f"# CONFIG_{name} is not set"
    if kind == "string":
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'CONFIG_{name}="{escaped}"'
    return f"CONFIG_{name}={value}"


def holds(kind: str, asked: str, got: str | None) -> bool:
    """Whether the result value ``got`` (None: not written) of a ``kind`` symbol (bool, int...) is the requested one."""
    if kind in ("bool", "tristate"):
        return (got or "n") == asked
    return got == asked


