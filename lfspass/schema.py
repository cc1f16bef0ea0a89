"""Load TOML tables into dataclasses with exact, one-line errors for bad keys and values."""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from lfspass.errors import RecipeError


def choice(*values: str, default: str, doc: str = "") -> Any:
    """A str field that must be one of ``values``."""
    return dataclasses.field(default=default, metadata={"choices": values, "doc": doc})


def path_field(default: str | None = None, doc: str = "") -> Any:
    """A path field: relative values are taken from the recipe's folder."""
    return dataclasses.field(default=default, metadata={"path": True, "doc": doc})


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
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


def _convert(value: Any, tp: Any, meta: Any, file: Path, key: str, base: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, args[0], meta, file, key, base)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected a table; see README 'Recipe reference'")
        return load_table(tp, value, file, key, base)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected {_type_name(tp)}")
        return [_convert(v, item, {}, file, f"{key}[{i}]", base) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected {_type_name(tp)}")
        out = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise RecipeError(f"{_where(file, f'{key}.{k}')} = {v!r}: expected a string (e.g. \"y\", \"m\", \"n\") or a number")
            out[str(k)] = str(v)
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected a string (quote it)")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise RecipeError(f"{_where(file, key)} = {value!r}: expected one of {', '.join(choices)}")
        if meta.get("path") and value:
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else (base / p).resolve())
        return value
    raise TypeError(f"unsupported schema type {tp!r}")  # a bug in lfspass, not user input


def load_table(cls: type, table: dict, file: Path, prefix: str, base: Path) -> Any:
    """Build ``cls`` from ``table``; unknown keys get the closest valid name as a hint."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(fields))}"
            raise RecipeError(f"{file}: unknown key '{full}'; {hint}")
        kwargs[key] = _convert(value, hints[key], fields[key].metadata, file, full, base)
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and n not in kwargs]
    if missing:
        raise RecipeError(f"{file}: [{prefix or 'top'}] needs key '{missing[0]}'; see README 'Recipe reference'")
    # Relative path defaults are relative to the recipe too.
    for name, f in fields.items():
        if name not in kwargs and f.metadata.get("path") and isinstance(f.default, str) and f.default:
            kwargs[name] = _convert(f.default, str, f.metadata, file, name, base)
    return cls(**kwargs)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for the README's recipe reference."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, key)
            continue
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            rows += describe(typing.get_args(tp)[0], f"[[{key}]]")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        kind = " \\| ".join(f.metadata["choices"]) if "choices" in f.metadata else (
            "a path" if f.metadata.get("path") else _type_name(tp))
        shown = default if isinstance(default, str) else str(default).lower() if isinstance(default, bool) else repr(default)
        doc = f.metadata.get("doc", "").replace("|", "\\|")
        rows.append((key, kind, f"`{shown}`" if shown else "", doc))
    return rows


def markdown_reference(cls: type) -> str:
    """The recipe reference as a Markdown table (README, between its markers)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {t} | {d} | {doc} |" for k, t, d, doc in describe(cls)]
    return "\n".join(lines) + "\n"
