"""The value types that plugins and stages exchange: Kconfig requests and doctor checks."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Request:
    """One wanted Kconfig symbol value (``symbol`` without the CONFIG_ prefix)."""

    symbol: str
    value: str
    source: str = "recipe"
    optional: bool = False  # skip with a note when the tree lacks the symbol


@dataclass
class Check:
    """One doctor finding; ``fix`` says what to do when the status is not pass."""

    id: str
    status: str          # pass | warn | fail | unknown
    title: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)
