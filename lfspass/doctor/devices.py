"""`lfspass doctor`'s checks for each passthrough device: present, right id, bound, group, BARs, NUMA."""
from __future__ import annotations

from typing import Any

from lfspass.model import Check, Status
from lfspass.host.groups import VIABLE_DRIVERS, group_of
from lfspass.host.read import Host, PciDevice, human_size
from lfspass.pci import short_address

# Classic OVMF gave PCI devices a 32 GiB 64-bit MMIO window (docs/explanation/p10-mmio.md); bigger needs
# X-PciMmio64Mb or host-phys-bits.
OVMF_MMIO64 = 32 << 30
OVMF_FIX = ("launch QEMU with -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=65536 and -cpu host,host-phys-bits=on "
            "(lfspass's launcher adds both for plugins that ask)")
HPE_BAR_FIX = ("enable 'PCI Express 64-Bit BAR Support' in the firmware (HPE RBSU: System Options > PCI; POST error 276), "
               "'Above 4G Decoding' on other boards")


def label(spec: Any) -> str:
    return short_address(spec.address) if spec.address else spec.id


def _id_name(host: Host, pci_id: str) -> str:
    vendor, device = pci_id.split(":")
    return host.ids.device(vendor, device) or pci_id


def locate(host: Host, spec: Any) -> tuple[PciDevice | None, Check]:
    """The host device a recipe entry means, and the check that says whether it is where the recipe says.

    When the address holds another card but the recipe's id sits elsewhere (the seed's
    moved P10), the check fails naming both addresses and the device found by id is
    returned so the remaining checks still look at the right card.
    """
    cid, title = f"device-present[{label(spec)}]", "device present with the recipe's id"
    at = host.devices.get(spec.address) if spec.address else None
    by_id = host.find_id(spec.id) if spec.id else []
    elsewhere = ", ".join(short_address(d.address) for d in by_id)
    # Unreadable ids first: "is None" must never pass for the recipe's device.
    if at is not None and at.id is None:
        return at, Check(cid, Status.UNKNOWN, title, f"{short_address(at.address)}: vendor/device attribute unreadable or garbled",
                         "re-save the host with `lfspass doctor --save`")
    if spec.address and at is not None and (not spec.id or at.id == spec.id):
        return at, Check(cid, Status.PASS, title, f"{short_address(at.address)} is {at.id} {at.name}")
    if spec.address:
        # at.id is known here: a device with unreadable ids returned 'unknown' above.
        here = (f"{short_address(spec.address)} is {at.id} ({_id_name(host, at.id)})" if at is not None and at.id
                else f"no device at {short_address(spec.address)}")
        if by_id:
            return by_id[0], Check(cid, Status.FAIL, title,
                                   f"{here}, not {spec.id}; the {spec.id} ({_id_name(host, spec.id)}) sits at {elsewhere}",
                                   f"set address = \"{short_address(by_id[0].address)}\" in the recipe's [[devices]] "
                                   f"(QEMU: -device vfio-pci,host={short_address(by_id[0].address)})")
        if at is None or spec.id:
            return None, Check(cid, Status.FAIL, title, f"{here}, and no {spec.id} anywhere on this host" if spec.id else here,
                               "check `lspci -nn` and reseat or power the card (HPE: look for POST errors); "
                               "fix address/id in the recipe")
    if by_id:
        extra = f" ({len(by_id)} match; checking the first, give address = to pick)" if len(by_id) > 1 else ""
        return by_id[0], Check(cid, Status.PASS, title, f"{spec.id} at {elsewhere}{extra}")
    return None, Check(cid, Status.FAIL, title, f"no {spec.id} on this host", "check `lspci -nn` and the recipe's id")


def check_driver(dev: PciDevice, lab: str, runtime: bool = False) -> Check:
    cid, title = f"device-driver[{lab}]", "bound to vfio-pci"
    if dev.driver == "vfio-pci":
        return Check(cid, Status.PASS, title, f"{short_address(dev.address)} driver: vfio-pci")
    if runtime:  # bind = "runtime": its VM's launcher hands it over with `lfspass bind`
        return Check(cid, Status.PASS, title, f"{short_address(dev.address)} on {dev.driver or 'no driver'} until its "
                     "VM starts (bind = \"runtime\": the launcher runs `lfspass bind`)")
    ids = dev.id or "VENDOR:DEVICE (read it with `lspci -nn`)"
    fix = (f"options vfio-pci ids={ids} in /etc/modprobe.d/vfio.conf with the module loaded at boot "
           f"(LFS: /etc/sysconfig/modules), or vfio-pci.ids={ids} on the kernel command line (`doit vfio grub`)")
    if dev.driver is None:
        return Check(cid, Status.FAIL, title, f"{short_address(dev.address)} has no driver: vfio-pci did not claim it", fix)
    return Check(cid, Status.FAIL, title, f"{short_address(dev.address)} is bound to {dev.driver}",
                 f"add 'softdep {dev.driver} pre: vfio-pci' and " + fix)


def check_group(host: Host, dev: PciDevice, lab: str) -> Check:
    cid, title = f"device-group[{lab}]", "IOMMU group viable"
    group = group_of(host, dev)
    if group is None:
        return Check(cid, Status.FAIL, title, f"{short_address(dev.address)} is in no IOMMU group (the IOMMU is off)",
                     "turn the IOMMU on (see check 'iommu')")
    others = [m for m in group.members if m.address != dev.address]
    if group.viable:
        mates = ", ".join(short_address(m.address) for m in others)
        return Check(cid, Status.PASS, title, f"group {group.number}" + (f" with {mates}" if mates else ": alone"))
    blockers = "; ".join(f"{short_address(b.address)} {b.class_name} [{b.id or 'id unreadable'}] on {b.driver}" for b in group.blockers)
    same_card = [b for b in group.blockers if b.address[:-1] == dev.address[:-1]]
    fix = ""
    if same_card:
        ids = sorted({i for i in (dev.id, *(b.id for b in same_card)) if i})
        unread = [short_address(d.address) for d in (dev, *same_card) if not d.id]
        # A function whose vendor/device attribute is unreadable has no id to list: name it instead.
        fix = (f"bind the card's other functions to vfio-pci too (vfio-pci ids={','.join(ids)}"
               + (f"; read the ids of {', '.join(unread)} with lspci -nn" if unread else "") + ")")
    if len(same_card) < len(group.blockers):
        fix += ("; " if fix else "") + ("move the card to a slot whose root port isolates it (ACS), or unbind the "
                                        "other devices; pcie_acs_override needs a patched kernel and weakens isolation")
    return Check(cid, Status.FAIL, title, f"group {group.number} also holds {blockers}", fix)


def check_bindable(host: Host, dev: PciDevice, lab: str) -> Check:
    """bind = "runtime": the group is judged by what `lfspass bind` will take when the VM starts."""
    from lfspass.errors import LfspassError
    from lfspass.host.bindplan import plan_groups

    cid, title = f"device-group[{lab}]", "IOMMU group can be bound when its VM starts"
    try:
        plans = plan_groups(host, [dev.address])
    except LfspassError as exc:
        return Check(cid, Status.FAIL, title, exc.one_line(), "see the detail: lfspass bind would refuse this group")
    takes = ", ".join(short_address(d.address) for p in plans for d in p.take)
    return Check(cid, Status.PASS, title, f"group {plans[0].number}: `lfspass bind` takes {takes}")


def check_bars(dev: PciDevice, lab: str) -> Check:
    cid, title = f"device-bars[{lab}]", "BARs assigned and within the guest's 64-bit window"
    if dev.bars is None:
        return Check(cid, Status.UNKNOWN, title, f"{short_address(dev.address)}: resource file missing, cut short or garbled",
                     "re-save the host with `lfspass doctor --save`")
    bars = [b for b in dev.bars if b.index <= 5 and b.is_mem]
    desc = ", ".join(f"BAR{b.index} {human_size(b.size)}" + (" 64-bit" if b.is_64 else "") + (" pref" if b.prefetch else "")
                     for b in bars)
    unset = [b for b in bars if b.unassigned]
    if unset:
        names = ", ".join(f"BAR{b.index} ({human_size(b.size)})" for b in unset)
        return Check(cid, Status.FAIL, title, f"{names} unassigned on the host: the firmware found no room for it", HPE_BAR_FIX)
    high = sum(b.size for b in bars if b.is_64)
    if high > OVMF_MMIO64 or any(b.size >= OVMF_MMIO64 for b in bars):
        return Check(cid, Status.WARN, title, f"{desc}: {high / (1 << 30):.2f} GiB of 64-bit BARs, more than classic "
                     "OVMF's 32 GiB 64-bit MMIO window", OVMF_FIX)
    return Check(cid, Status.PASS, title, desc or "no memory BARs")


def check_numa(dev: PciDevice, lab: str) -> Check:
    cid, title = f"device-numa[{lab}]", "NUMA node"
    if dev.numa_node is None:
        return Check(cid, Status.UNKNOWN, title, "numa_node missing or garbled")
    if dev.numa_node < 0:
        return Check(cid, Status.PASS, title, "no NUMA affinity reported (one node)")
    n = dev.numa_node
    local = f" (CPUs {dev.local_cpulist})" if dev.local_cpulist else ""
    return Check(cid, Status.PASS, title, f"node {n}{local}",
                 f'keep the VM on node {n}: [vms.tuning] numa = "device" (the default on a host with more than one node)')


def check_dev_vfio(host: Host, dev: PciDevice, lab: str) -> Check:
    cid, title = f"dev-vfio[{lab}]", "/dev/vfio/<group> exists"
    if dev.iommu_group is None:
        return Check(cid, Status.UNKNOWN, title, "no IOMMU group, so no /dev/vfio node", "turn the IOMMU on (see check 'iommu')")
    node = f"/dev/vfio/{dev.iommu_group}"
    listing = host.dev_vfio()
    if listing is None and not host.live:
        return Check(cid, Status.UNKNOWN, title, "the saved root has no dev/vfio listing", "re-save with `lfspass doctor --save`")
    if str(dev.iommu_group) in (listing or set()):
        return Check(cid, Status.PASS, title, f"{node} present")
    if dev.driver != "vfio-pci":
        return Check(cid, Status.WARN, title, f"{node} absent: it appears once the device is bound to vfio-pci",
                     "bind the device to vfio-pci (see its driver check)")
    return Check(cid, Status.FAIL, title, f"{node} absent although the device is on vfio-pci",
                 "modprobe vfio-pci; check that devtmpfs/udev create /dev/vfio nodes")


def device_checks(host: Host, spec: Any, runtime: bool = False) -> list[Check]:
    dev, present = locate(host, spec)
    if dev is None:
        return [present]
    lab = label(spec)
    group = check_bindable(host, dev, lab) if runtime else check_group(host, dev, lab)
    return [present, check_driver(dev, lab, runtime), group, check_bars(dev, lab),
            check_numa(dev, lab), check_dev_vfio(host, dev, lab)]


def devices_to_check(host: Host, recipe: Any) -> list[Any]:
    """The recipe's devices; without a recipe, every device bound to vfio-pci."""
    if recipe is not None and getattr(recipe, "devices", None):
        return list(recipe.devices)
    from lfspass.recipe import DeviceSpec

    return [DeviceSpec(address=d.address, id=d.id or "") for d in host.devices.values()
            if d.driver in VIABLE_DRIVERS and not d.is_bridge]


def plan_device(host: Host, spec: Any, pm: Any) -> Any:
    """A :class:`lfspass.plan.Device` for plugin hooks; the owner comes from the recipe's id first."""
    from lfspass.plan import Device
    from lfspass.plugins import owner_of

    found = host.devices.get(spec.address) if spec.address else None
    pci_id = spec.id or (found.id if found else "") or ""
    cls = f"0x{found.pci_class:06x}" if found and found.pci_class is not None else ""
    return Device(id=pci_id, address=spec.address or "", pci_class=cls, name=getattr(spec, "name", ""),
                  plugin=owner_of(pm, pci_id) if pci_id else "")


def check_hda(host: Host, dev: PciDevice, lab: str) -> Check:
    """NVIDIA's 'Enabling HDA controller' quirk exposes an audio function .1 that joins the group."""
    cid, title = f"hda-function[{lab}]", "audio function of the card"
    slot = dev.address[:-1]
    mates = [d for a, d in host.devices.items() if a.startswith(slot) and a != dev.address]
    held = [d for d in mates if d.driver and d.driver not in VIABLE_DRIVERS]
    log = host.kernel_log
    quirk = log is not None and f"{dev.address}: Enabling HDA controller" in log
    if held:
        ids = ",".join(sorted({dev.id or "", *(d.id or "" for d in held)} - {""}))
        return Check(cid, Status.FAIL, title, "; ".join(f"{short_address(d.address)} [{d.id}] on {d.driver}" for d in held)
                     + " shares the card's IOMMU group", f"bind it to vfio-pci too: vfio-pci ids={ids}")
    if mates:
        return Check(cid, Status.PASS, title, ", ".join(f"{short_address(d.address)} on {d.driver or 'no driver'}" for d in mates))
    if log is None:
        return Check(cid, Status.UNKNOWN, title, "kernel log not readable", "run doctor as root")
    if quirk:
        return Check(cid, Status.PASS, title, f"log: '{short_address(dev.address)}: Enabling HDA controller'; no "
                     f"{short_address(slot)}1 on the bus yet", f"if {short_address(slot)}1 appears (rescan, reboot), bind it to vfio-pci too")
    return Check(cid, Status.PASS, title, "no other function on the card")
