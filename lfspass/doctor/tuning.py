"""Doctor's [vms.tuning] checks: is each VM placed on its card's NUMA node, and are its huge pages there.

The placement is the one the launchers are written from (:func:`lfspass.host.placement.place`), read
against the host doctor looks at (live or a saved root), so a check says what the launcher does.
"""
from __future__ import annotations

from typing import Any

from lfspass.errors import LfspassError
from lfspass.host.read import Host
from lfspass.model import Check, Status
from lfspass.recipe.rules import parse_size
from lfspass.host.placement import PAGE_MIB, Placement, format_cpulist, parse_cpulist, place


def _placement(host: Host, recipe: Any, vm: Any) -> tuple[Placement | None, int, str]:
    """(placement, memory MiB, why not) for one VM."""
    try:
        mib = parse_size(vm.memory, f"vms[{recipe.vms.index(vm)}].memory", default_unit="M") >> 20
        return place(recipe, vm, mib, host), mib, ""
    except LfspassError as exc:
        return None, 0, exc.one_line()


def check_placement(host: Host, recipe: Any, vm: Any, placement: Placement) -> Check | None:
    cid, title = f"vm-numa[{vm.name}]", f"VM {vm.name}: NUMA placement"
    nodes = host.numa_nodes
    node = placement.device_node
    if node is None or len(nodes) < 2:
        return None   # one node, or a card on none: nothing to place
    local = set(parse_cpulist(nodes.get(node, "")))
    cpus = set(parse_cpulist(placement.cpus))
    where = f"the card is on node {node} (CPUs {format_cpulist(sorted(local))})"
    if placement.node is None and not cpus:
        return Check(cid, Status.WARN, title, f"not placed: {where}, the VM's vCPUs and memory go wherever the "
                     "scheduler puts them (half the time the other socket)",
                     'set [vms.tuning] numa = "device" (or drop numa = "off"), then `doit vm`')
    if placement.node is not None and placement.node != node:
        return Check(cid, Status.WARN, title, f"memory bound to node {placement.node} but {where}",
                     'set [vms.tuning] numa = "device", then `doit vm`')
    off = sorted(cpus - local) if local else []
    if off:
        other = sorted({n for n, text in nodes.items() for c in parse_cpulist(text) if c in off})
        return Check(cid, Status.WARN, title, f"vCPUs pinned to {placement.cpus}: CPU {format_cpulist(off)} "
                     f"{'is' if len(off) == 1 else 'are'} on node {', '.join(map(str, other)) or '?'}, but {where}",
                     f"set [vms.tuning] cpus to CPUs of node {node} ({format_cpulist(sorted(local))}) or drop cpus "
                     "to follow the card, then `doit vm`")
    if placement.node is None:
        return Check(cid, Status.WARN, title, f"vCPUs on {placement.cpus} (node {node}), memory not bound: {where}",
                     'set [vms.tuning] numa = "device" to bind the memory too, then `doit vm`')
    return Check(cid, Status.PASS, title, f"vCPUs on {placement.cpus or 'the node'} and memory on node {node}: "
                 f"{where}")


def check_hugepages(host: Host, size: str, need: dict[int | None, int]) -> Check:
    """Free pages of ``size`` against what the VMs need (node -> pages; None = anywhere)."""
    cid, title = f"hugepages[{size}]", f"{size} huge pages for the VMs"
    kib = PAGE_MIB[size] * 1024
    short, known, said = [], [], []
    for node, pages in sorted(need.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        pool = host.hugepage_pool(kib, node)
        place_ = "the host" if node is None else f"node {node}"
        if pool is None:
            return Check(cid, Status.UNKNOWN, title, f"no {size} pool readable for {place_} "
                         f"(sys/kernel/mm/hugepages, sys/devices/system/node, proc/meminfo)",
                         "run doctor on the host itself, or re-save it with `lfspass doctor --save`")
        reserved, free = pool
        said.append(f"{place_}: {free} free of {reserved}, the VMs need {pages}")
        known.append(reserved)
        if reserved < pages:
            short.append(("reserved", place_, pages))
        elif free < pages:
            short.append(("free", place_, pages))
    detail = "; ".join(said)
    if any(kind == "reserved" for kind, _, _ in short):
        return Check(cid, Status.FAIL, title, f"too few reserved ({detail}): the VM's QEMU cannot map its memory",
                     "boot the GRUB entry lfspass wrote (`doit grub`: hugepagesz=, hugepages= per node), or "
                     f"echo N > /sys/devices/system/node/nodeX/hugepages/hugepages-{kib}kB/nr_hugepages")
    if short:
        return Check(cid, Status.WARN, title, f"fewer free than the VMs need ({detail}); pages a running VM "
                     "holds are not free", "stop what holds them, or reserve more (see the GRUB entry's hugepages=)")
    return Check(cid, Status.PASS, title, detail)


def tuning_checks(host: Host, recipe: Any) -> list[Check]:
    if recipe is None or not getattr(recipe, "vms", None):
        return []
    out: list[Check] = []
    need: dict[str, dict[int | None, int]] = {}
    for vm in recipe.vms:
        placement, mib, why = _placement(host, recipe, vm)
        if placement is None:
            out.append(Check(f"vm-numa[{vm.name}]", Status.FAIL, f"VM {vm.name}: NUMA placement", why,
                             "fix the recipe as the line says, then `doit vm`"))
            continue
        check = check_placement(host, recipe, vm, placement)
        if check is not None:
            out.append(check)
        if placement.hugepages:
            per = need.setdefault(placement.hugepages, {})
            per[placement.node] = per.get(placement.node, 0) + mib // PAGE_MIB[placement.hugepages]
    out += [check_hugepages(host, size, per) for size, per in need.items()]
    return out
