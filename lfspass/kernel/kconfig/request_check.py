"""Requests against a tree's Kconfig sources: known symbol, a value conf can be asked, held in the result.

Everything here reads symbols.py's view of the tree (no kconfiglib), so it works on kernels
whose syntax kconfiglib does not know, and explains a refusal from the symbol's own
Kconfig lines (file:line) with the values the result config gives them.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import operator
import re
from dataclasses import asdict
from pathlib import Path

from lfspass.errors import KconfigError, LfspassError
from lfspass.fsutil import write_atomic
from lfspass.kernel.kconfig import nochange, symbols
from lfspass.kernel.kconfig.conf_runner import kconfig_env
from lfspass.kernel.kconfig.conf_source import cache_root
from lfspass.kernel.kconfig.result import Skipped
from lfspass.model import Request

_MEM: dict[str, tuple[symbols.Source, list]] = {}
_TRI = {"n": 0, "m": 1, "y": 2}


def scan_cached(tree: Path, arch: str) -> symbols.Source:
    """symbols.scan of the tree, kept in process and on disk until a Kconfig file changes."""
    env = kconfig_env(arch)
    ident = hashlib.sha256(json.dumps([str(tree), env], sort_keys=True).encode()).hexdigest()[:16]
    cache = cache_root() / f"kconfig-scan-{ident}.json"
    hit = _MEM.get(ident)
    if hit is not None and nochange.files_key(tree, hit[0].files) == hit[1]:
        return hit[0]
    src = None
    try:
        data = json.loads(cache.read_text())
        key = nochange.files_key(tree, data["files"])
        if [list(x) for x in key] == data["key"]:
            src = symbols.Source({n: symbols.Sym(**s) for n, s in data["syms"].items()}, data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        src = None
    if src is None:
        src = symbols.scan(tree, env)
        key = nochange.files_key(tree, src.files)
        try:
            write_atomic(cache, json.dumps({"files": src.files, "key": key,
                                            "syms": {n: asdict(s) for n, s in src.syms.items()}}))
        except (OSError, LfspassError):
            pass  # only speed is lost
    _MEM[ident] = (src, key)
    return src


def unwritable(kind: str, value: str) -> str | None:
    """Why ``value`` cannot go to conf as asked; None when conf may judge it.

    conf judges numbers itself (symbol.c sym_string_valid: no leading zeros, the form of a
    hex) and its refusal is reported in its words (form_hint adds what to write).  Checked
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


def form_hint(kind: str, value: str) -> str:
    """What to write instead of a number conf refused as malformed."""
    if kind == "int":
        fix = f"; write {int(value)}" if re.fullmatch(r"-?[0-9]+", value) else ""
        return f"an int symbol takes a decimal number without leading zeros{fix}"
    if kind == "hex":
        return "a hex symbol takes a hex number like 0x1f"
    return ""


def check_requests(src: symbols.Source, requests: list[Request]) -> tuple[dict[str, tuple[str, str]], list[Skipped]]:
    """(symbol -> (value, source), skipped optional ones); raises on unknown symbols, bad values, conflicts."""
    wanted: dict[str, tuple[str, str]] = {}
    skipped: list[Skipped] = []
    problems: list[str] = []
    for req in requests:
        sym = src.syms.get(req.symbol)
        if sym is None or sym.transitional:
            if req.optional:
                skipped.append(Skipped(req.symbol, f"not in this kernel tree (optional, from {req.source})"))
                continue
            if sym is not None:
                problems.append(f"{req.symbol} (from {req.source}): an old name this tree keeps only to read old "
                                f"configs (transitional, {sym.defs[0]}); request the symbol that replaced it")
                continue
            close = difflib.get_close_matches(req.symbol, list(src.syms), n=3, cutoff=0.75)
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


def request_line(sym: symbols.Sym, value: str) -> str:
    """The .config line that asks conf for ``value``."""
    if sym.type in ("bool", "tristate") and value == "n":
        return f"# CONFIG_{sym.name} is not set"
    if sym.type == "string":
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'CONFIG_{sym.name}="{escaped}"'
    return f"CONFIG_{sym.name}={value}"


def holds(sym: symbols.Sym, asked: str, got: str | None) -> bool:
    """Whether the result value ``got`` (None: not written) is the requested one."""
    if sym.type in ("bool", "tristate"):
        return (got or "n") == asked
    return got == asked


def _evaluate(expr: str, values: dict[str, str]) -> int | None:
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


def explain_source(src: symbols.Source, name: str, asked: str, got: str, source: str,
                   values: dict[str, str], hint: str | None) -> str:
    """Why ``name`` did not take ``asked``, from its Kconfig lines (file:line) and the result's values."""
    sym = src.syms[name]
    head = f"{name}={asked} (from {source}) refused (got {got or 'nothing'})"

    def shown(expr: str) -> str:
        names = symbols.names_in(expr)
        vals = ", ".join(f"{n}={values.get(n, 'n')}" + ("" if n in src.syms else " (not defined for this architecture)")
                         for n in names)
        return f"{expr} [{vals}]" if vals else expr

    if sym.type in ("bool", "tristate") and _TRI.get(got or "n", 0) > _TRI.get(asked, 0):
        sel = [(s, c, w) for s, c, w in sym.selected_by
               if _TRI.get(values.get(s, "n"), 0) and (not c or _evaluate(c, values))]
        if sel:
            return (f"{head}: selected by " + " || ".join(f"{s} [{s}={values.get(s)}]"
                                                           + (f" if {c}" if c else "") + f" ({w})" for s, c, w in sel)
                    + f"; turn off {', '.join(dict.fromkeys(s for s, _c, _w in sel))} first")
        if sym.choice:
            return f"{head}: is the chosen member of its choice ({sym.defs[0]}); ask for another member =y instead"
        if asked == "m" and values.get("MODULES", "n") != "y":
            return f"{head}: MODULES=n turns m into y ({sym.defs[0]}); set MODULES=y"
        return f"{head}: its default or an implying symbol wins ({sym.defs[0]})"
    want = 1 if sym.type == "bool" or asked == "m" else 2
    bad = [(e, w) for e, w in sym.depends if (_evaluate(e, values) or 0) < want]
    if bad:
        todo = sorted({n for e, _w in bad for n in _positive(e)
                       if n in src.syms and src.syms[n].prompt and _TRI.get(values.get(n, "n"), 0) < want})
        text = f"{head}: depends on " + " && ".join(f"{shown(e)} ({w})" for e, w in bad)
        if todo:
            text += f"; enable {', '.join(todo)}" + (f" or use {hint}" if hint else "")
        return text
    if not sym.prompt:
        return f"{head}: has no prompt (set only by select or default) ({', '.join(sym.defs)})"
    if sym.ranges:
        return f"{head}: conf keeps it inside " + ", ".join(f"range {shown(r)} ({w})" for r, w in sym.ranges)
    if sym.choice:
        return f"{head}: sits in a choice where another member is chosen ({sym.defs[0]}); ask for only one"
    return f"{head}: the kernel's conf gave {got or 'nothing'} ({', '.join(sym.defs)})"


def _positive(expr: str) -> list[str]:
    """Names in ``expr`` that must be on to satisfy it (not under a `!`, not compared)."""
    expr = re.sub(r"!\s*\([^()]*\)|!\s*\w+|\w+\s*!?=\s*\w+", " ", expr)
    return symbols.names_in(expr)
