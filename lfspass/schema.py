"""Load TOML tables into dataclasses with exact, one-line errors for bad keys and values."""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from lfspass.errors import RecipeError
from lfspass.fsutil import write_atomic


def choice(*values: str, default: str, doc: str = "") -> Any:
    """A str field that must be one of ``values``."""
    return dataclasses.field(default=default, metadata={"choices": values, "doc": doc})


def path_field(default: str | None = None, doc: str = "") -> Any:
    """A path field: relative values are taken from the recipe's folder."""
    return dataclasses.field(default=default, metadata={"path": True, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a key's value must look like beyond its type (shown in the recipe reference, enforced on load)."""

    pattern: str | None = None    # full match, for strings and list items
    form: str = ""                # the pattern said for people, e.g. "a size such as 4G"
    range: tuple[int, int] | None = None
    exists: str | None = None     # "file" or "dir": a path that must exist when the recipe loads
    # Called with (value, where) when the pattern does not match, to raise an error that says
    # exactly what is wrong (e.g. the seed's '10de:11b39': "'11b39' has 5 hex digits, not 4").
    explain: typing.Callable[[str, str], object] | None = dataclasses.field(default=None, compare=False)

    def said(self) -> str:
        parts = []
        if self.form:
            parts.append(self.form)
        elif self.pattern:
            parts.append(f"matching `{self.pattern}`")
        if self.range:
            parts.append(f"{self.range[0]} to {self.range[1]}")
        if self.exists:
            parts.append(f"an existing {'folder' if self.exists == 'dir' else 'file'}")
        return "; ".join(parts)


def _rule_key(key: str) -> str:
    """'vms[0].vnc.listen' and '[[vms]].vnc.listen' -> 'vms.vnc.listen'."""
    return re.sub(r"\[\d+\]", "", key).replace("[[", "").replace("]]", "")


def _check_text(value: str, where: str, path: bool) -> None:
    """Rules every string obeys: one line, no control characters, a length a file system takes."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise RecipeError(f"{where} = {value!r}: control characters (a line break, a tab, NUL) are not allowed; "
                          "write the value on one line")
    if len(value) > 4096:
        raise RecipeError(f"{where}: {len(value)} characters; at most 4096")
    if path and value and (len(os.fsencode(value)) > 4095 or any(len(os.fsencode(p)) > 255 for p in value.split("/"))):
        raise RecipeError(f"{where} = {value[:60]!r}...: longer than a path may be (4095 bytes, 255 per name)")


def _apply(rule: Rule | None, value: Any, where: str) -> None:
    if rule is None:
        return
    if rule.range and isinstance(value, int) and not rule.range[0] <= value <= rule.range[1]:
        raise RecipeError(f"{where} = {value}: expected {rule.range[0]} to {rule.range[1]}")
    if rule.pattern and isinstance(value, str) and not re.fullmatch(rule.pattern, value):
        if rule.explain is not None:
            rule.explain(value, where)  # raises the specific error
        raise RecipeError(f"{where} = {value!r}: expected {rule.form or 'a value matching ' + rule.pattern}")
    if rule.exists and isinstance(value, str) and value:
        ok = Path(value).is_dir() if rule.exists == "dir" else Path(value).is_file()
        if not ok:
            raise RecipeError(f"{where} = {value!r}: no such {'folder' if rule.exists == 'dir' else 'file'}; "
                              "fix the path (relative paths start at the recipe's folder)")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _type_name(next(a for a in typing.get_args(tp) if a is not type(None)))
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table of strings"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _where(file: Path, key: str) -> str:
    return f"{file}: {key}"


def _convert(value: Any, tp: Any, meta: Any, file: Path, key: str, base: Path, rules: dict | None = None) -> Any:
    rules = rules or {}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, args[0], meta, file, key, base, rules)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected a table; see docs/reference/recipe.md")
        return load_table(tp, value, file, key, base, rules)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected {_type_name(tp)}")
        # List items obey the list's rule (a pattern per item).
        out = [_convert(v, item, {}, file, f"{key}[{i}]", base, rules) for i, v in enumerate(value)]
        if not dataclasses.is_dataclass(item):
            for i, v in enumerate(out):
                _apply(rules.get(_rule_key(key)), v, _where(file, f"{key}[{i}]"))
        return out
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected {_type_name(tp)}")
        table: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise RecipeError(f"{_where(file, f'{key}.{k}')} = {v!r}: expected a string (e.g. \"y\", \"m\", \"n\") or a number")
            _check_text(str(v), _where(file, f"{key}.{k}"), False)
            table[str(k)] = str(v)
        return table
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected an integer")
        _apply(rules.get(_rule_key(key)), value, _where(file, key))
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected a string (quote it)")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected one of {', '.join(choices)}")
        _check_text(value, _where(file, key), bool(meta.get("path")))
        rule = rules.get(_rule_key(key))
        if meta.get("path") and value:
            p = Path(value).expanduser()
            value = str(p if p.is_absolute() else (base / p).resolve())
        _apply(rule, value, _where(file, key))
        return value
    raise TypeError(f"unsupported schema type {tp!r}")  # a bug in lfspass, not user input


def load_table(cls: type, table: dict, file: Path, prefix: str, base: Path, rules: dict | None = None) -> Any:
    """Build ``cls`` from ``table``; unknown keys get the closest valid name as a hint.

    ``rules`` (default: ``cls.rules``) maps dotted keys without indices to a Rule.
    """
    rules = rules if rules is not None else getattr(cls, "rules", {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(fields))}"
            raise RecipeError(f"{file}: unknown key '{full}'; {hint}")
        kwargs[key] = _convert(value, hints[key], fields[key].metadata, file, full, base, rules)
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and n not in kwargs]
    if missing:
        raise RecipeError(f"{file}: [{prefix or 'top'}] needs key '{missing[0]}'; see docs/reference/recipe.md")
    # Relative path defaults are relative to the recipe too.
    for name, f in fields.items():
        if name not in kwargs and f.metadata.get("path") and isinstance(f.default, str) and f.default:
            kwargs[name] = _convert(f.default, str, {**f.metadata, "exists": None}, file, name, base)
    return cls(**kwargs)


def describe(cls: type, prefix: str = "", rules: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(key, type and valid form, default, doc) rows for the recipe reference."""
    rules = rules if rules is not None else getattr(cls, "rules", {})
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        key = f"{prefix}.{f.name}" if prefix else f.name
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows += describe(tp, key, rules)
            continue
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            rows += describe(typing.get_args(tp)[0], f"[[{key}]]", rules)
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        kind = " \\| ".join(f.metadata["choices"]) if "choices" in f.metadata else (
            "a path" if f.metadata.get("path") else _type_name(tp))
        rule = rules.get(_rule_key(key))
        if rule is not None and rule.said():
            kind += ": " + rule.said().replace("|", "\\|")
        shown = f.metadata["shown"] if "shown" in f.metadata else default if isinstance(default, str) else str(default).lower() if isinstance(default, bool) else repr(default)
        doc = f.metadata.get("doc", "").replace("|", "\\|")
        rows.append((key, kind, f"`{shown}`" if shown else "", doc))
    return rows


def markdown_reference(cls: type) -> str:
    """The recipe reference as a Markdown table (docs/reference/recipe.md, between its markers)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {t} | {d} | {doc} |" for k, t, d, doc in describe(cls)]
    return "\n".join(lines) + "\n"


REFERENCE_BEGIN, REFERENCE_END = "<!-- BEGIN recipe-reference", "<!-- END recipe-reference -->"


def write_reference(page: Path, cls: type) -> bool:
    """Put ``cls``'s reference table between the page's markers, the rest kept byte for byte; True if it changed."""
    try:
        text = page.read_text()
    except OSError as exc:
        raise RecipeError(f"{page}: cannot read ({exc.strerror}); run this in a clone of the repository") from None
    begin, end = text.find(REFERENCE_BEGIN), text.find(REFERENCE_END)
    if begin < 0 or end < begin:
        raise RecipeError(f"{page}: no '{REFERENCE_BEGIN} ...' line before '{REFERENCE_END}'; put both markers back")
    begin = text.index("\n", begin) + 1
    return write_atomic(page, text[:begin] + markdown_reference(cls) + text[end:])


def reference_main(page: Path, cls: type) -> int:
    """``python -m lfspass.recipe``: rewrite the page's table, say so; a bad page is one error line."""
    try:
        print(f"{page}: {'table rewritten' if write_reference(page, cls) else 'table already current'}")
    except RecipeError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    return 0
