"""The value types that plugins and stages exchange: Kconfig requests, what a .config says, doctor checks."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum

from lfspass.errors import PluginError


@dataclass(frozen=True)
class Request:
    """One wanted Kconfig symbol value (``symbol`` without the CONFIG_ prefix)."""

    symbol: str
    value: str
    source: str = "recipe"
    optional: bool = False  # skip with a note when the tree lacks the symbol


_ASSIGN = re.compile(r'^CONFIG_([A-Za-z0-9_]+)=(.*)$|^# CONFIG_([A-Za-z0-9_]+) is not set$', re.M)


def config_values(text: str) -> dict[str, str]:
    """Symbol -> value of a .config text ('n' for 'is not set', strings unquoted): the one .config reader."""
    out = {}
    for m in _ASSIGN.finditer(text):
        if m.group(3):
            out[m.group(3)] = "n"
        else:
            val = m.group(2)
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = re.sub(r"\\(.)", r"\1", val[1:-1])
            out[m.group(1)] = val
    return out


class Status(StrEnum):
    """A check's outcome; it is its own string ("pass", ...) in text and JSON."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"   # what the check needs could not be read


@dataclass
class Check:
    """One doctor finding; ``fix`` says what to do when the status is not pass."""

    id: str
    status: Status
    title: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        # Plugins pass plain strings ("pass"); anything else is the plugin's bug, said in one line.
        try:
            self.status = Status(self.status)
        except ValueError:
            raise PluginError(f"check {self.id!r}: status {self.status!r} is not one of "
                              f"{', '.join(Status)}; fix the code that made it") from None

    def as_dict(self) -> dict:
        return {**asdict(self), "status": str(self.status)}
