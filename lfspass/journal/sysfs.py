"""Journaled sysfs writes: a PCI device's driver and driver_override, changed and put back as one entry.

sysfs attributes are not files whose bytes can be copied back: writing ``unbind`` or
``drivers_probe`` acts, and ``driver_override`` reads ``(null)`` when unset.  So a device's
journal entry (``"kind": "sysfs"``, path ``sys/bus/pci/devices/<addr>``) records its *state*
before and after (``driver=nouveau override=-``) and each write made in between, in
order; `lfspass rollback` brings the state back with the writes the kernel documents
(driver_override, unbind, drivers_probe, bind).  The entry is saved before the first write,
so a run killed half way still rolls back.  Every write goes through one writer object:
plain writes on a live sysfs, a stand-in that updates a synthetic tree in the tests.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfspass import journal
from lfspass.errors import CheckFailed, HostError, ToolFailed
from lfspass.journal.holders import refuse_if_held

PCI = "sys/bus/pci"
KIND = "sysfs"


class SysfsWriteFailed(ToolFailed):
    """The kernel refused a sysfs write (the message names the attribute, the value and errno)."""


class SysfsWriter:
    """Plain writes, the whole value in one write(2), as sysfs attributes must be written."""

    def write(self, path: Path, value: str) -> None:
        fd = os.open(path, os.O_WRONLY)  # no O_CREAT: a missing attribute is an error, never a new file
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


_writer: list[SysfsWriter] = [SysfsWriter()]
_active: list[tuple[journal.Run, dict[str, Any]]] = []  # (run, entry) whose writes are being listed


def writer() -> SysfsWriter:
    return _writer[0]


def set_writer(new: SysfsWriter) -> SysfsWriter:
    """Make ``new`` the writer every sysfs write goes through; return the previous one."""
    old, _writer[0] = _writer[0], new
    return old


@dataclass(frozen=True)
class State:
    """What a device's driver link and driver_override say (None: no driver / not set)."""

    driver: str | None
    override: str | None = None

    def text(self) -> str:
        return f"driver={self.driver or '-'} override={self.override or '-'}"

    @classmethod
    def parse(cls, text: str) -> State:
        fields = dict(part.split("=", 1) for part in text.split())
        return cls(None if fields["driver"] == "-" else fields["driver"],
                   None if fields["override"] == "-" else fields["override"])


def device_rel(address: str) -> str:
    return f"{PCI}/devices/{address}"


def inside(root: str | os.PathLike, rel: str) -> Path:
    """``root/rel`` with links resolved, refused if that leads out of ``root`` (a saved root's planted link)."""
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, rel))
    if path != base and not path.startswith(base.rstrip("/") + "/"):
        raise HostError(f"{Path(root) / rel} leads to {path}, outside the host root {root}; "
                        "give the live host (/) or a root whose sysfs links stay inside it")
    return Path(path)


def read_state(root: str | os.PathLike, address: str) -> State | None:
    """The device's state now, or None when the device is not there."""
    dev = inside(root, device_rel(address))
    if not dev.is_dir():
        return None
    try:
        driver: str | None = os.path.basename(os.readlink(dev / "driver"))
    except OSError:
        driver = None
    try:
        override = (dev / "driver_override").read_text().strip()
    except OSError:
        override = ""
    return State(driver, None if override in ("", "(null)") else override)


def _write(path: Path, value: str) -> None:
    try:
        writer().write(path, value)
    except OSError as exc:
        _note(path, value, exc.strerror or str(exc))
        raise SysfsWriteFailed(f"writing {value.strip()!r} to {path} failed: {exc.strerror or exc}") from None
    _note(path, value, "ok")


def _note(path: Path, value: str, result: str) -> None:
    """List the write in the device's journal entry (saved at once: the journal keeps every write)."""
    if _active:
        run, entry = _active[-1]
        entry["writes"].append([str(path), value.strip(), result])
        run.save()


def apply(root: str | os.PathLike, address: str, target: State, *, reprobe: bool = False) -> State:
    """Move the device towards ``target`` with the kernel's own writes; return the state it ended in.

    driver_override first (so the probe can only pick that driver), then unbind from the
    current driver, then drivers_probe; when the kernel's own match binds nothing, the
    target driver's ``bind`` is tried (its id table still decides).  ``reprobe`` with no
    target driver lets the kernel's match choose one (a device nobody recorded a driver for).
    """
    dev, bus = inside(root, device_rel(address)), inside(root, PCI)
    now = read_state(root, address)
    if now is None:
        raise HostError(f"{dev}: no such PCI device (removed?); nothing to change")
    if now.override != target.override:
        _write(dev / "driver_override", (target.override or "") + "\n")  # an empty line clears it
    if now.driver and now.driver != target.driver:
        _write(bus / "drivers" / now.driver / "unbind", address)
    if (target.driver or reprobe) and now.driver != target.driver:
        _write(bus / "drivers_probe", address)
        got = read_state(root, address)
        bind = bus / "drivers" / (target.driver or "-") / "bind"
        if got is not None and got.driver is None and target.driver and target.driver != target.override \
                and bind.exists():
            with contextlib.suppress(SysfsWriteFailed):  # refused: the state read below says so
                _write(bind, address)
    return read_state(root, address) or State(None)


@contextlib.contextmanager
def editing(root: str | os.PathLike, address: str) -> Iterator[None]:
    """Journal what the block does to the device's driver state (one entry per device and run)."""
    run = journal.current_run(root)
    rel = device_rel(address)
    before = read_state(root, address)
    entry = run.entry(rel)
    if entry is None:
        entry = {"path": rel, "kind": KIND, "before": before.text() if before else None, "after": None,
                 "done": False, "saved": None, "mode": None, "writes": []}
        run.data["entries"].append(entry)
    entry.setdefault("writes", [])
    run.save()  # before the first write: a run killed half way still rolls back
    _active.append((run, entry))
    try:
        yield
    finally:
        _active.pop()
        after = read_state(root, address)
        entry["after"], entry["done"] = (after.text() if after else None), True
        if entry["after"] == entry["before"]:
            run.data["entries"].remove(entry)   # as it was (a failed bind put back): nothing to undo
        run.save()


# -- what journal/rollback.py asks of sysfs entries -------------------------------------------------
def is_sysfs(entry: dict) -> bool:
    return entry.get("kind") == KIND


def current(root: str | os.PathLike, rel: str) -> str | None:
    """The entry's state now, in the journal's words (None: the device is gone)."""
    state = read_state(root, rel.rsplit("/", 1)[-1])
    return state.text() if state else None


def refuse_held(root: str | os.PathLike, rels: list[str]) -> None:
    """Before a rollback writes anything: refuse, naming the PIDs, when one of these devices is in use."""
    for rel in rels:
        address = rel.rsplit("/", 1)[-1]
        state = read_state(root, address)
        refuse_if_held(root, address, state.driver if state else None, "roll back")


def restore(root: str | os.PathLike, rel: str, before: str | None) -> None:
    """Put the device back in the state ``before`` (journaled in the current run)."""
    address = rel.rsplit("/", 1)[-1]
    if before is None:
        return  # the device appeared during the run: there is no earlier state to go back to
    target = State.parse(before)
    with editing(root, address):
        got = apply(root, address, target)
    if got != target:
        raise CheckFailed(f"{address}: rollback wanted {target.text()}, the kernel left {got.text()}; "
                          f"see dmesg, then bind it by hand (echo {address} > /sys/bus/pci/drivers/"
                          f"{target.driver or 'DRIVER'}/bind)")
