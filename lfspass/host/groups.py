"""IOMMU groups of a host and whether each one can be handed to a VM as a whole."""
from __future__ import annotations

from dataclasses import dataclass, field

from lfspass.host.read import Host, PciDevice
from lfspass.pci import short_address

# Drivers that leave a group usable by VFIO: vfio-pci owns the device, pci-stub only
# holds it.  No driver at all is fine too (QEMU's vfio binds nothing else).
VIABLE_DRIVERS = ("vfio-pci", "pci-stub")


@dataclass
class Group:
    number: int
    members: list[PciDevice] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # listed in the group, absent from sys/bus/pci

    @property
    def blockers(self) -> list[PciDevice]:
        """Non-bridge members bound to a host driver: each makes QEMU say 'group N is not viable'.

        PCIe bridges (class 0x0604xx, on pcieport) are exempt: since Linux 5.19 their
        driver manages DMA itself and does not block VFIO.
        """
        return [d for d in self.members if not d.is_bridge and d.driver and d.driver not in VIABLE_DRIVERS]

    @property
    def viable(self) -> bool:
        return not self.blockers

    def verdict(self) -> str:
        if self.viable:
            return "viable"
        names = ", ".join(f"{short_address(d.address)} ({d.class_name or 'device'}) on {d.driver}" for d in self.blockers)
        return f"not viable: {names}"


def read_groups(host: Host) -> list[Group]:
    """Every IOMMU group in number order; empty when the IOMMU is off."""
    out = []
    for number, addresses in host.iommu_groups.items():
        group = Group(number)
        for address in addresses:
            dev = host.devices.get(address)
            if dev is None:
                group.missing.append(address)
            else:
                group.members.append(dev)
        out.append(group)
    return out


def group_of(host: Host, dev: PciDevice) -> Group | None:
    """The group holding ``dev`` (from its iommu_group link, else the groups' device lists)."""
    for group in read_groups(host):
        if group.number == dev.iommu_group or any(m.address == dev.address for m in group.members):
            return group
    return None


def device_json(dev: PciDevice) -> dict:
    return {
        "address": dev.address,
        "class": f"0x{dev.pci_class:06x}" if dev.pci_class is not None else None,
        "class_name": dev.class_name or None,
        "id": dev.id,
        "name": dev.name,
        "subsystem": (f"{dev.subsystem_vendor}:{dev.subsystem_device}"
                      if dev.subsystem_vendor and dev.subsystem_device else None),
        "driver": dev.driver,
        "iommu_group": dev.iommu_group,
        "numa_node": dev.numa_node,
        "bridge": dev.is_bridge,
    }


def groups_json(host: Host, groups: list[Group]) -> dict:
    grouped = {m.address for g in groups for m in g.members}
    return {
        "host_root": str(host.root),
        "iommu": bool(groups),
        "groups": [{
            "group": g.number,
            "viable": g.viable,
            "blockers": [{"address": d.address, "driver": d.driver, "name": d.name} for d in g.blockers],
            "devices": [device_json(d) for d in g.members],
            "missing": g.missing,
        } for g in groups],
        # With the IOMMU off every device lands here; scripts still get the inventory.
        "ungrouped": [device_json(d) for a, d in host.devices.items() if a not in grouped],
    }


def device_line(dev: PciDevice) -> str:
    """``82:00.0 3D controller [0302]: NVIDIA … [10de:1e37]`` (lspci -nn's words) + the driver."""
    cls = f"{dev.pci_class >> 8:04x}" if dev.pci_class is not None else "????"
    ids = dev.id or "????:????"
    return (f"{short_address(dev.address)} {dev.class_name or 'Unknown class'} [{cls}]: {dev.name} [{ids}]"
            f"  driver: {dev.driver or '-'}")


def render_text(host: Host, groups: list[Group]) -> str:
    if not groups:
        return (f"No IOMMU groups under {host.root / 'sys/kernel/iommu_groups'}: the IOMMU is off "
                f"({len(host.devices)} PCI devices have no group). Run `lfspass doctor` for the fix.\n")
    lines = []
    for g in groups:
        lines.append(f"IOMMU group {g.number}: {g.verdict()}")
        lines.extend(f"    {device_line(d)}" for d in g.members)
        lines.extend(f"    {a} listed in the group but missing from sys/bus/pci/devices" for a in g.missing)
    bad = [g for g in groups if not g.viable]
    lines.append(f"{len(groups)} groups, {len(groups) - len(bad)} viable, {len(bad)} not viable"
                 + (" (bind each blocking device to vfio-pci, or move the card to another slot)" if bad else ""))
    return "\n".join(lines) + "\n"
