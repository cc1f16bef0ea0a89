"""What configure() decided: frozen per-symbol outcomes and the whole result, with the JSON rows they are saved as.

The rows are the files' format (the no-change stamp, the build folder's config.json, the
manifest): ``[symbol, why]`` for a skipped request, ``[symbol, value, why]`` for one resolve set.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Change:
    """A symbol whose value moved; '' means absent from that config."""

    symbol: str
    old: str
    new: str


@dataclass(frozen=True)
class Skipped:
    """An optional request this tree cannot take, and why."""

    symbol: str
    why: str

    def to_json(self) -> list[str]:
        return [self.symbol, self.why]

    @classmethod
    def from_json(cls, row: Sequence[str]) -> Skipped:
        symbol, why = row
        return cls(symbol, why)


@dataclass(frozen=True)
class Resolved:
    """A symbol resolve set so that a request could hold."""

    symbol: str
    value: str
    why: str

    def to_json(self) -> list[str]:
        return [self.symbol, self.value, self.why]

    @classmethod
    def from_json(cls, row: Sequence[str]) -> Resolved:
        symbol, value, why = row
        return cls(symbol, value, why)


def decisions_json(skipped: Iterable[Skipped], resolved: Iterable[Resolved]) -> dict[str, list[list[str]]]:
    """``{"skipped": [...], "resolved": [...]}``: the rows the stamp and config.json keep."""
    return {"skipped": [s.to_json() for s in skipped], "resolved": [r.to_json() for r in resolved]}


def decisions_from_json(data: dict) -> tuple[list[Skipped], list[Resolved]]:
    """The (skipped, resolved) that :func:`decisions_json` saved."""
    return ([Skipped.from_json(x) for x in data["skipped"]], [Resolved.from_json(x) for x in data["resolved"]])


@dataclass(frozen=True)
class KconfigResult:
    """What configure() did: whether the file changed, each change, skipped and resolved requests."""

    changed: bool
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    resolved: list[Resolved] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # upgrade notes: the report's short lines
    report: Any = None   # a carried config's upgrade_report.UpgradeReport (not imported here: no cycle)

    def decisions_json(self) -> dict[str, list[list[str]]]:
        return decisions_json(self.skipped, self.resolved)
