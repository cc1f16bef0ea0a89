"""What `lfspass bind` takes: the named devices, the rest of each one's IOMMU group, and what it refuses.

vfio-pci can only hand over a whole group, so every endpoint in it goes to vfio-pci or the
bind is refused before anything is written.  The rule, by PCI class code (docs/explanation/iommu-groups.md):

* bridges (class 0x06xx) on no driver or on pcieport stay where they are: they do not make
  a group unviable (groups.py); a bridge on another driver (an ISA/LPC bridge on lpc_ich) is
  the host's own and refuses the group; a bridge is never bound.
* an endpoint named on the command line (or by the recipe) is taken, whatever its class.
* an endpoint not named is taken along when it is on vfio-pci, pci-stub or no driver, or is
  a display (0x03, not the host's boot display), multimedia (0x04: the card's HDMI audio) or
  accelerator (0x12) function, or a USB / serial-bus function (0x0c03, 0x0c80: a GPU's USB-C
  and UCSI) in the same slot as a named device.  Anything else on a host driver is refused,
  named: storage (0x01) holds the host's disks, network (0x02) its links, a USB controller
  (0x0c03) elsewhere its keyboard and disks, and other classes are the host's too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lfspass.errors import InputError, PciIdError
from lfspass.host.groups import VIABLE_DRIVERS
from lfspass.host.read import Host, PciDevice
from lfspass.pci import parse_pci_address, parse_pci_id, short_address

TAKE_ALONG = {0x03: "display", 0x04: "multimedia", 0x12: "accelerator"}
SAME_SLOT = (0x0C03, 0x0C80)     # base+sub class: USB, other serial bus
WHY_HOST = {0x01: "a storage controller: the host's disks hang off it",
            0x02: "a network controller the host may be using",
            0x0C: "a serial-bus controller (USB, SMBus) the host's keyboard, disks or sensors may use",
            0x06: "a bridge the host's own chipset needs"}


@dataclass
class GroupPlan:
    """One IOMMU group of a bind: endpoints to move to vfio-pci, bridges left alone."""

    number: int
    named: list[str]
    take: list[PciDevice] = field(default_factory=list)
    bridges: list[PciDevice] = field(default_factory=list)


def _is_bridge(dev: PciDevice) -> bool:
    return dev.pci_class is not None and dev.pci_class >> 16 == 0x06


def _label(dev: PciDevice) -> str:
    return f"{short_address(dev.address)} ({dev.class_name or 'device'} [{dev.id or '????:????'}])"


def _refusal(host: Host, dev: PciDevice, named: list[str]) -> str | None:
    """Why the unnamed group member ``dev`` cannot go along, or None when it can."""
    cls = dev.pci_class
    if _is_bridge(dev):
        return None if dev.driver in (None, "pcieport") else WHY_HOST[0x06]
    if dev.driver is None or dev.driver in VIABLE_DRIVERS:
        return None
    if cls is None:
        return "a device whose class cannot be read"
    if cls >> 16 in TAKE_ALONG:
        boot_vga = (host.read(f"sys/bus/pci/devices/{dev.address}/boot_vga", 16) or "").strip()
        return "the host's boot display (boot_vga = 1)" if cls >> 16 == 0x03 and boot_vga == "1" else None
    if cls >> 8 in SAME_SLOT and any(dev.address[:-1] == a[:-1] for a in named):
        return None
    return WHY_HOST.get(cls >> 16, "a device the host may be using")


def plan_groups(host: Host, addresses: list[str], verb: str = "bind") -> list[GroupPlan]:
    """The groups of ``addresses`` (full form), each with what moves; InputError before any write."""
    plans: dict[int, GroupPlan] = {}
    for address in addresses:
        dev = host.devices.get(address)
        if dev is None:
            raise PciIdError(f"{short_address(address)}: no such PCI device under {host.root / 'sys/bus/pci/devices'}; "
                             "see `lspci -D` (or `lfspass groups`)")
        if _is_bridge(dev):
            raise InputError(f"{_label(dev)} is a bridge: it is never handed to vfio-pci; name the card behind it")
        if dev.iommu_group is None:
            raise InputError(f"{_label(dev)} has no IOMMU group: the IOMMU is off, so vfio-pci cannot take it; "
                             "`lfspass doctor` says how to turn it on")
        plans.setdefault(dev.iommu_group, GroupPlan(dev.iommu_group, [])).named.append(address)
    for plan in plans.values():
        refused = []
        for member in host.iommu_groups.get(plan.number, []):
            dev = host.devices.get(member)
            if dev is None:
                continue
            why = None if member in plan.named else _refusal(host, dev, plan.named)
            if why:
                refused.append(f"{_label(dev)} on {dev.driver}, {why}")
            elif _is_bridge(dev):
                plan.bridges.append(dev)
            else:
                plan.take.append(dev)
        if refused:
            names = " ".join(short_address(a) for a in plan.named)
            raise InputError(f"cannot {verb} {names}: IOMMU group {plan.number} also holds {'; '.join(refused)}; "
                             "vfio-pci takes a whole group, so nothing was changed; name those devices too if the "
                             "VM should have them, or move the card to a slot with its own group (`lfspass groups`)")
    return [plans[n] for n in sorted(plans)]


def _entries_for(word: str, entries: list, recipe: object | None) -> list:
    """The [[devices]] entries a DEV word that is not an address means (by name, else by id)."""
    where = getattr(recipe, "path", "the recipe")
    named = [e for e in entries if e.name and e.name == word]
    if named:
        return named
    if ":" not in word:
        raise InputError(f"DEV {word!r} is not a PCI address (82:00.0), an id (10de:1e37) or a name from "
                         + (f"{where}'s [[devices]]" if recipe is not None else "a recipe's [[devices]] (give --recipe)"))
    pci_id = parse_pci_id(word, f"DEV {word!r}")
    if recipe is None:
        raise InputError(f"DEV {word}: an id names a device of the recipe's [[devices]]; give --recipe, "
                         f"or the device's address (lspci -Dnn -d {pci_id})")
    by_id = [e for e in entries if e.id == pci_id]
    if not by_id:
        raise InputError(f"DEV {word}: {where} has no [[devices]] entry with id {pci_id}; add it, or give the address")
    return by_id


def resolve(root: str, words: list[str], recipe: object | None) -> list[str]:
    """DEV words (an address, an id from the recipe, a [[devices]] name) -> full addresses, in order.

    The words are judged before the host root is read, so a typo is named first.
    """
    out: list[str] = []
    host: Host | None = None
    entries = list(getattr(recipe, "devices", []) or [])
    for word in words:
        by_name = any(e.name == word for e in entries)
        if not by_name and ":" in word and not re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}", word):
            out.append(parse_pci_address(word, f"DEV {word!r}"))   # says what is wrong with 82:00 or 82.00.0
            continue
        for entry in _entries_for(word, entries, recipe):
            if entry.address:
                found = [entry.address]
            else:
                host = host or Host(root)
                found = [d.address for d in host.find_id(entry.id)]
            if len(found) != 1:
                raise InputError(f"DEV {word}: {entry.id} matches {len(found)} devices under {root} "
                                 f"({', '.join(short_address(a) for a in found) or 'none'}); give the address "
                                 "(on the command line, or address = in [[devices]])")
            out.append(found[0])
    return list(dict.fromkeys(out))
