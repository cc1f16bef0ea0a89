"""`lfspass bind` / `release`: move a device's whole IOMMU group to vfio-pci at run time, and give it back.

The kernel's way (Documentation/ABI/testing/sysfs-bus-pci): ``driver_override`` = vfio-pci,
``unbind`` from the current driver, ``drivers_probe``, then the ``driver`` link says who took
it.  Each device's previous driver is recorded in ``<root>/var/lib/lfspass/bound.json`` so
`release` knows what to give back; every write is journaled (lfspass.journal.sysfs), so
`lfspass rollback` undoes a bind.  A bind that fails half way puts back what it changed, in
reverse, before it reports.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lfspass import journal
from lfspass.errors import CheckFailed, HostError, InputError, LfspassError, ToolFailed, family_of
from lfspass.fsutil import require_tool
from lfspass.host.bindplan import GroupPlan, plan_groups
from lfspass.host.read import Host, PciDevice
from lfspass.journal import sysfs
from lfspass.journal.holders import refuse_if_held
from lfspass.journal.sysfs import State
from lfspass.pci import short_address

VFIO = State("vfio-pci", "vfio-pci")
RECORDS = "var/lib/lfspass/bound.json"


@dataclass
class Step:
    """One device of a bind or release: where it was and where it ended."""

    address: str
    id: str | None
    class_name: str
    group: int | None
    before: str | None
    after: str | None
    changed: bool
    note: str = ""

    def line(self) -> str:
        move = f"{self.before or 'no driver'} -> {self.after or 'no driver'}" if self.changed else \
            f"stays on {self.after or 'no driver'}"
        return f"  {short_address(self.address)} {self.class_name} [{self.id}]: {move}" + \
            (f" ({self.note})" if self.note else "")


@dataclass
class Outcome:
    action: str
    root: Path
    steps: list[Step] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"action": self.action, "host_root": str(self.root), "bridges_left": self.bridges,
                "devices": [vars(s) for s in self.steps]}


def _step(dev: PciDevice, before: str | None, after: str | None, note: str = "") -> Step:
    return Step(dev.address, dev.id, dev.class_name or "device", dev.iommu_group, before, after, before != after, note)


def records_path(root: Path) -> Path:
    return root / RECORDS


def load_records(root: Path) -> dict[str, dict]:
    """address -> {driver, override, group, id} for every device lfspass bound and has not released."""
    path = records_path(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise HostError(f"{path}: unreadable ({exc}); move it aside: `lfspass release` then cannot name "
                        "the drivers to give back, and reprobes instead") from None
    return dict(data.get("devices", {}))


def _save_records(root: Path, records: dict[str, dict]) -> None:
    # Journaled like every host edit, so a rollback of the bind also forgets what it recorded.
    journal.write_atomic(root, records_path(root), json.dumps({"devices": records}, indent=1, sort_keys=True) + "\n")


def _live_sysfs(host: Host) -> None:
    if not (host.root / "sys/bus/pci/drivers_probe").exists():
        raise InputError(f"{host.root}: no sys/bus/pci/drivers_probe, so this is not a live sysfs (a "
                         "`doctor --save` copy cannot be bound); run on the host itself (--host-root /)")


def _vfio_loaded(host: Host) -> None:
    if (host.root / "sys/bus/pci/drivers/vfio-pci").is_dir():
        return
    if not host.live:
        raise InputError(f"{host.root}: vfio-pci is not loaded (no sys/bus/pci/drivers/vfio-pci); modprobe vfio-pci")
    proc = subprocess.run([require_tool("modprobe", "kmod"), "vfio-pci"], capture_output=True, text=True)
    if proc.returncode != 0 or not (host.root / "sys/bus/pci/drivers/vfio-pci").is_dir():
        said = " ".join(proc.stderr.split())[:200]
        raise ToolFailed(f"modprobe vfio-pci failed ({said or 'exit ' + str(proc.returncode)}); is the kernel built "
                         "with VFIO_PCI (lfspass doctor)?")


def _undo(root: Path, done: list[tuple[str, State]]) -> list[str]:
    """Put each device back, newest first; the lines say where each one ended."""
    said = []
    for address, before in reversed(done):
        try:
            with sysfs.editing(root, address):
                got = sysfs.apply(root, address, before)
        except LfspassError as exc:
            said.append(f"could not put back {short_address(address)}: {exc.one_line()}")
            continue
        said.append(f"put back {short_address(address)} on {got.driver or 'no driver'}" if got == before else
                    f"{short_address(address)} is on {got.driver or 'no driver'}, was {before.driver or 'no driver'}")
    return said


def bind(root: str | Path, addresses: list[str], say: Callable[[str], None] = print) -> Outcome:
    """Move the groups of ``addresses`` to vfio-pci; refused or put back as a whole."""
    host = Host(root)
    out = Outcome("bind", host.root)
    plans: list[GroupPlan] = plan_groups(host, addresses, "bind")
    _live_sysfs(host)
    todo = [d for p in plans for d in p.take if d.driver != "vfio-pci"]
    for dev in todo:  # every holder is named before the first write
        refuse_if_held(host.root, dev.address, dev.driver, "bind")
    if todo:
        _vfio_loaded(host)
    records = load_records(host.root)
    done: list[tuple[str, State]] = []
    try:
        for plan in plans:
            out.bridges += [f"{short_address(b.address)} on {b.driver or 'no driver'}" for b in plan.bridges]
            say(f"IOMMU group {plan.number}: {len(plan.take)} device(s) to vfio-pci"
                + (f", bridges left as they are: {', '.join(short_address(b.address) for b in plan.bridges)}"
                   if plan.bridges else ""))
            for dev in plan.take:
                if dev not in todo:
                    out.steps.append(_step(dev, dev.driver, dev.driver, "already" + (
                        "" if dev.address in records else ", not bound by lfspass: release reprobes it")))
                    say(out.steps[-1].line())
                    continue
                before = sysfs.read_state(host.root, dev.address) or State(None)
                done.append((dev.address, before))
                with sysfs.editing(host.root, dev.address):
                    got = sysfs.apply(host.root, dev.address, VFIO)
                if got.driver != "vfio-pci":
                    raise CheckFailed(f"{short_address(dev.address)}: drivers_probe succeeded but left it on "
                                      f"{got.driver or 'no driver'}, not vfio-pci (dmesg says why vfio-pci's probe "
                                      "failed)")
                records[dev.address] = {"driver": before.driver, "override": before.override,
                                        "group": dev.iommu_group, "id": dev.id}
                out.steps.append(_step(dev, before.driver, got.driver))
                say(out.steps[-1].line())
        if done:
            _save_records(host.root, records)
    except BaseException as exc:
        put_back = _undo(host.root, done)
        if not isinstance(exc, LfspassError):
            raise
        raise family_of(exc)(f"{exc.one_line()}; " + ("; ".join(put_back) if put_back else "nothing was changed"),
                             exit_code=exc.exit_code) from None
    return out


def release(root: str | Path, addresses: list[str], say: Callable[[str], None] = print,
            recorded_only: bool = False) -> Outcome:
    """Give the groups of ``addresses`` back to the drivers recorded at bind (or to whatever probes).

    ``recorded_only`` (a launcher's release): a device bind did not record, because it was on
    vfio-pci already, stays there.
    """
    host = Host(root)
    out = Outcome("release", host.root)
    records = load_records(host.root)
    members: list[str] = []
    for address in addresses:
        dev = host.devices.get(address)
        if dev is None:
            raise InputError(f"{short_address(address)}: no such PCI device under {host.root / 'sys/bus/pci/devices'}")
        group = host.iommu_groups.get(dev.iommu_group, []) if dev.iommu_group is not None else []
        members += [address] + [m for m in group if m in records]
    members = sorted(dict.fromkeys(members), reverse=True)   # the reverse of bind's order
    _live_sysfs(host)
    for address in members:
        refuse_if_held(host.root, address, host.devices[address].driver, "release")
    failed: list[str] = []
    families: list[type[LfspassError]] = []   # each failure's family; the first one's exit code wins
    for address in members:
        dev, rec = host.devices[address], records.get(address)
        now = sysfs.read_state(host.root, address) or State(None)
        if (now.driver != "vfio-pci" and not (rec and now.driver is None)) or (recorded_only and not rec):
            records.pop(address, None)
            out.steps.append(_step(dev, now.driver, now.driver, "not recorded at bind: left alone" if recorded_only
                                   and not rec and now.driver == "vfio-pci" else "not on vfio-pci: left alone"))
            say(out.steps[-1].line())
            continue
        target = State(rec["driver"], rec["override"]) if rec else State(None)
        try:
            with sysfs.editing(host.root, address):
                got = sysfs.apply(host.root, address, target, reprobe=rec is None)
        except LfspassError as exc:
            failed.append(f"{short_address(address)}: {exc.one_line()}; " + "; ".join(_undo(host.root, [(address, now)])))
            families.append(family_of(exc))   # a sysfs write that failed stays a tool failure (3), as in bind
            continue
        note = "" if rec else "no driver was recorded: the kernel's probe chose"
        if rec and got.driver != rec["driver"]:
            why = ("vfio-pci took it again: its id is in vfio-pci's ids (boot-time binding in "
                   "etc/modprobe.d/vfio.conf or vfio-pci.ids=)" if got.driver == "vfio-pci" else
                   f"{got.driver} took it" if got.driver else "no driver claimed it")
            failed.append(f"{short_address(address)}: {why}, not the recorded {rec['driver'] or 'no driver'}"
                          + (f" (is its module loaded? modprobe {rec['driver']})" if not got.driver and rec["driver"]
                             else ""))
            families.append(CheckFailed)
            note = why
        else:
            records.pop(address, None)
        out.steps.append(_step(dev, now.driver, got.driver, note))
        say(out.steps[-1].line())
    if any(s.changed for s in out.steps) or set(records) != set(load_records(host.root)):
        _save_records(host.root, records)
    if failed:
        raise families[0]("release: " + "; ".join(failed))
    return out
