"""Read a tree's Kconfig sources line by line (no language parser): symbols, types, dependency lines.

This is what lfspass knows about a tree without kconfiglib: which symbols the architecture's
Kconfig files define (following ``source`` lines with $(SRCARCH) etc. expanded, so another
architecture's symbols are not counted), each symbol's type, and the lines that decide its
value (``depends on``, enclosing ``if``/``menu``/``choice``, ``select``/``imply`` by others,
``range``), each with file:line.  It is enough to check requests and to explain a refusal on a
tree whose syntax is newer than kconfiglib knows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


_VAR = re.compile(r"\$\((\w+)\)")
_KW = re.compile(r"^(\S+)\s*(.*)$")
_TYPES = {"bool", "tristate", "int", "hex", "string", "def_bool", "def_tristate"}


@dataclass
class Sym:
    """One symbol as its definitions in the Kconfig files say."""

    name: str
    type: str = ""
    defs: list[str] = field(default_factory=list)  # file:line of each `config NAME`
    prompt: bool = False
    prompt_text: str = ""   # the first prompt's words (test options are told apart by them)
    transitional: bool = False
    depends: list[tuple[str, str]] = field(default_factory=list)  # (expression, where)
    selected_by: list[tuple[str, str, str]] = field(default_factory=list)  # (symbol, if-condition, where)
    ranges: list[tuple[str, str]] = field(default_factory=list)  # ("lo hi [if c]", where)
    choice: bool = False


@dataclass
class Source:
    """Everything read from one tree: symbols by name and the files that were read."""

    syms: dict[str, Sym]
    files: list[str]


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def _unquote(text: str) -> str:
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text


def _strip_comment(text: str) -> str:
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return text[:i].rstrip()
    return text


def scan(tree: Path, env: dict[str, str], top: str = "Kconfig") -> Source:
    """Follow ``top`` and its ``source`` lines under ``tree``; $(VAR) comes from ``env``."""
    syms: dict[str, Sym] = {}
    files: list[str] = []
    # (kind, expression, where) of every open if/menu/choice block
    stack: list[tuple[str, str, str]] = []

    def sym(name: str) -> Sym:
        return syms.setdefault(name, Sym(name))

    def read(rel: str) -> None:
        path = tree / rel
        try:
            lines = path.read_text(errors="replace").split("\n")
        except OSError:
            return
        files.append(rel)
        entry: Sym | None = None
        block: list | None = None  # the menu/choice block whose `depends on` lines come next
        i = 0
        while i < len(lines):
            start, raw = i, lines[i]
            while raw.endswith("\\") and i + 1 < len(lines):
                i += 1
                raw = raw[:-1] + " " + lines[i]
            i += 1
            text = _strip_comment(raw).strip()
            m = _KW.match(text)
            if not m:
                continue
            kw, rest, where = m.group(1), m.group(2).strip(), f"{rel}:{start + 1}"
            if kw in ("help", "---help---"):
                hi = None
                while i < len(lines):
                    if lines[i].strip():
                        hi = _indent(lines[i]) if hi is None else hi
                        if _indent(lines[i]) < hi:
                            break
                    i += 1
                continue
            if kw in ("config", "menuconfig"):
                entry, block = sym(rest), None
                entry.defs.append(where)
                entry.choice = entry.choice or any(k == "choice" for k, _e, _w in stack)
                for kind, expr, w in stack:
                    if expr:
                        entry.depends.append((expr, f"{w} ({kind})"))
                continue
            if kw in ("source", "osource", "rsource", "orsource"):
                name = _VAR.sub(lambda v: env.get(v.group(1), ""), _unquote(rest))
                if kw.startswith(("r", "or")):
                    name = str(Path(rel).parent / name)
                matches = sorted(str(p.relative_to(tree)) for p in tree.glob(name)) if "*" in name else [name]
                for sub in matches:
                    read(sub)
                entry = block = None
                continue
            if kw in ("menu", "choice", "if"):
                block = [kw, rest if kw == "if" else "", where]
                stack.append(block)  # type: ignore[arg-type]
                entry = None
                continue
            if kw in ("endmenu", "endchoice", "endif"):
                if stack:
                    stack.pop()
                entry = block = None
                continue
            if kw in ("comment", "mainmenu"):
                entry = block = None
                continue
            if kw == "depends" and rest.startswith("on"):
                expr = _conditional_dep(rest[2:].strip())
                if entry is not None:
                    entry.depends.append((expr, where))
                elif block is not None:
                    block[1] = f"({block[1]}) && ({expr})" if block[1] else expr
                continue
            if entry is None:
                continue
            if kw in _TYPES:
                entry.type = entry.type or kw.removeprefix("def_")
                if kw in ("bool", "tristate", "int", "hex", "string") and rest.startswith(("\"", "'")):
                    entry.prompt = True
                    entry.prompt_text = entry.prompt_text or _unquote(rest.partition(" if ")[0])
            elif kw == "prompt":
                entry.prompt = True
                entry.prompt_text = entry.prompt_text or _unquote(rest.partition(" if ")[0])
            elif kw == "transitional":
                entry.transitional = True
            elif kw in ("select", "imply"):
                target, _, cond = rest.partition(" if ")
                sym(target.strip()).selected_by.append((entry.name, cond.strip(), f"{where} ({kw})"))
            elif kw == "range":
                entry.ranges.append((rest, where))

    read(top)
    # Names that appear only as select targets are not defined here.
    return Source({n: s for n, s in syms.items() if s.defs}, files)


def _conditional_dep(expr: str) -> str:
    """``A if B`` (conditional dependency, 7.x kconfig) reads as ``A || B=n`` (menu.c)."""
    dep, sep, cond = expr.partition(" if ")
    return f"({dep.strip()}) || !({cond.strip()})" if sep else expr


def names_in(expr: str) -> list[str]:
    """The symbol names an expression mentions (no constants, no quoted strings)."""
    expr = re.sub(r"\"[^\"]*\"|'[^']*'", "", expr)
    return list(dict.fromkeys(n for n in re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", expr)
                              if n not in ("y", "m", "n") and not n.isdigit()))


@dataclass(frozen=True)
class Kind:
    """What a request needs to know of a symbol before conf runs (the scan's index)."""

    type: str
    transitional: bool = False
    where: str = ""   # file:line of its first definition (kept for a transitional one, which is named)
