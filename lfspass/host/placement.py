"""[vms.tuning] and the card's kind -> where a VM runs and what it shows, decided once from the host's sysfs.

The launcher (``taskset -c`` around QEMU, a ``memory-backend`` bound to the node), the libvirt
XML (``<cputune>``, ``<numatune>``, ``<memoryBacking>``), the GRUB entry (huge pages reserved at
boot) and doctor all read the :class:`Placement` made here, so they cannot disagree.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from lfspass.errors import LfspassError, VmError
from lfspass.host.read import Host
from lfspass.pci import parse_pci_address
from lfspass.recipe import Recipe, VmSpec
from lfspass.recipe.rules import parse_size

PAGE_MIB = {"2M": 2, "1G": 1024}
COMPUTE_CLASS = 0x0302   # PCI "3D controller": a card without display outputs (T10, P10)
BACKEND_ID = "mem0"


@dataclass(frozen=True)
class Placement:
    """Where one VM's vCPUs and memory go; empty = wherever the host puts them."""

    node: int | None = None       # host NUMA node guest memory is bound to
    cpus: str = ""                # host CPU list QEMU (all its vCPU threads) runs on
    hugepages: str = ""           # "2M" or "1G": guest memory from huge pages of that size
    device_node: int | None = None  # the node of the VM's first passthrough device, when known
    notes: list[str] = field(default_factory=list)

    @property
    def page_kib(self) -> int:
        return PAGE_MIB[self.hugepages] * 1024 if self.hugepages else 0


def parse_cpulist(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]; a garbled part reads as nothing."""
    out: set[int] = set()
    for part in text.strip().split(","):
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", part.strip())
        if m:
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            out.update(range(lo, hi + 1))
    return sorted(out)


def format_cpulist(cpus: list[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8' (the form sysfs, taskset and libvirt all read)."""
    runs: list[list[int]] = []
    for c in sorted(set(cpus)):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def read_host(recipe: Recipe) -> Host | None:
    """The host the plan is made from, or None when its sysfs root cannot be read."""
    try:
        return Host(recipe.host.sysfs_root)
    except LfspassError:
        return None


def device_nodes(vm: VmSpec, host: Host | None) -> list[tuple[str, int | None, str | None]]:
    """(address, NUMA node, local_cpulist) of each device the VM names, as the host's sysfs says."""
    if host is None:
        return []
    out = []
    for entry in vm.devices:
        text = entry.strip().lower()
        if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{4}", text):
            found = host.find_id(text)
        else:
            dev = host.pci_device(parse_pci_address(text, "vms.devices"))
            found = [dev] if dev is not None else []
        out += [(d.address, d.numa_node if d.numa_node is not None and d.numa_node >= 0 else None, d.local_cpulist)
                for d in found]
    return out


def place(recipe: Recipe, vm: VmSpec, memory_mib: int, host: Host | None = None) -> Placement:
    """The VM's placement; bad [vms.tuning] values raise one VmError line."""
    index = recipe.vms.index(vm)
    where = f"{recipe.path}: vms[{index}].tuning"
    tuning = vm.tuning
    pages = "" if tuning.hugepages == "off" else tuning.hugepages
    host = host or read_host(recipe)
    nodes = host.numa_nodes if host else {}
    devs = device_nodes(vm, host)
    notes: list[str] = []
    if pages and memory_mib % PAGE_MIB[pages]:
        raise VmError(f"{recipe.path}: vms[{index}].memory = {vm.memory!r} is not a whole number of "
                      f"{tuning.hugepages} huge pages; give a multiple of {tuning.hugepages} or hugepages = \"2M\"")
    if tuning.numa == "device" and not vm.devices:
        raise VmError(f"{where}.numa = \"device\": the VM has no passthrough device to follow; "
                      "give devices, or numa = \"off\" (and cpus = [...] to pin by hand)")
    known = [(a, n, c) for a, n, c in devs if n is not None]
    device_node = known[0][1] if known else None
    mode = tuning.numa
    if mode == "auto":
        mode = "device" if len(nodes) > 1 and known else "off"
    node, cpus = None, ""
    if mode == "device":
        if not known:
            notes.append("numa = device: the passthrough devices report no NUMA node (numa_node -1); not placed")
        else:
            address, node, local = known[0]
            if len({n for _, n, _ in known}) > 1:
                notes.append(f"the devices sit on nodes {', '.join(str(n) for _, n, _ in known)}: placed on node "
                             f"{node}, the node of {address}")
            cpus = format_cpulist(parse_cpulist(local or nodes.get(node, "")))
            if tuning.cpus:
                notes.append(f"memory on NUMA node {node}, the node of {address}")
            else:
                notes.append(f"vCPUs and memory on NUMA node {node}, the node of {address}" +
                             (f" (host CPUs {cpus})" if cpus else " (its CPU list is unknown: memory only)"))
    if tuning.cpus:
        on_host = {c for text in nodes.values() for c in parse_cpulist(text)}
        missing = sorted(set(tuning.cpus) - on_host) if on_host else []
        if missing:
            raise VmError(f"{where}.cpus: CPU {format_cpulist(missing)} is not on this host (its CPUs: "
                          f"{format_cpulist(sorted(on_host))}); pick CPUs from `lscpu -p` or "
                          "/sys/devices/system/node/node*/cpulist")
        cpus = format_cpulist(tuning.cpus)
        notes.append(f"vCPUs pinned to host CPUs {cpus} (tuning.cpus)")
    if pages:
        notes.append(f"guest memory from {pages} huge pages ({memory_mib // PAGE_MIB[pages]} reserved at boot by "
                     "the GRUB entry)")
    return Placement(node=node, cpus=cpus, hugepages=pages, device_node=device_node, notes=notes)


def launch_prefix(placement: Placement) -> list[str]:
    """Programs QEMU starts under: ``taskset -c`` puts every QEMU thread, the vCPUs too, on those CPUs."""
    return ["taskset", "-c", placement.cpus] if placement.cpus else []


def backend_args(placement: Placement, memory_mib: int) -> list[str]:
    """The ``-object memory-backend-*`` of guest RAM (``-machine memory-backend=mem0`` names it); [] = QEMU's own."""
    if placement.node is None and not placement.hugepages:
        return []
    value = (f"memory-backend-memfd,id={BACKEND_ID},size={memory_mib}M,hugetlb=on,hugetlbsize={placement.hugepages}"
             if placement.hugepages else f"memory-backend-ram,id={BACKEND_ID},size={memory_mib}M")
    if placement.node is not None:
        value += f",host-nodes={placement.node},policy=bind"
    return ["-object", value]


def compute_card(host: Host | None, addresses: list[str]) -> str:
    """The first of ``addresses`` that is a compute card (PCI class 0302, no display outputs), or ''."""
    for address in addresses:
        dev = host.pci_device(address) if host else None
        if dev is not None and dev.pci_class is not None and dev.pci_class >> 8 == COMPUTE_CLASS:
            return address
    return ""


def hugepage_params(recipe: Recipe) -> list[str]:
    """Kernel parameters reserving the huge pages the recipe's VMs ask for, per node where a VM is placed."""
    if all(vm.tuning.hugepages == "off" for vm in recipe.vms):
        return []
    host = read_host(recipe)
    need: dict[str, dict[int | None, int]] = {}
    for vm in recipe.vms:
        if vm.tuning.hugepages == "off":
            continue
        mib = parse_size(vm.memory, f"{recipe.path}: vms[{recipe.vms.index(vm)}].memory", default_unit="M") >> 20
        node = place(recipe, vm, mib, host).node
        per = need.setdefault(vm.tuning.hugepages, {})
        per[node] = per.get(node, 0) + math.ceil(mib / PAGE_MIB[vm.tuning.hugepages])
    if not need:
        return []
    params = [f"default_hugepagesz={next(iter(need))}"]
    for size, per in need.items():
        # Node form (<node>:<count>) puts the pages where the VMs' memory is bound; with a VM bound
        # nowhere, the total, which the kernel spreads over the nodes.
        count = (str(sum(per.values())) if None in per else
                 ",".join(f"{n}:{c}" for n, c in sorted(per.items(), key=lambda kv: kv[0] or 0)))
        params += [f"hugepagesz={size}", f"hugepages={count}"]
    return params
