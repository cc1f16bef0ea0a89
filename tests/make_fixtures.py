"""Build host roots laid out as the kernel lays out sysfs, from documented real data.

Usage: ``python tests/make_fixtures.py DEST [NAME...]`` or ``build(name, dest)``.

Each root holds ``sys/devices/pci0000:BB/.../<addr>/`` with the attribute files
(``vendor``, ``device``, ``class``, ``subsystem_*``, ``revision``, ``irq``,
``numa_node``, ``resource``, 256 bytes of ``config``), relative links exactly as the
kernel makes them (``sys/bus/pci/devices/<addr>`` -> ``../../../devices/...``,
``driver`` -> ``../../../bus/pci/drivers/<drv>``, ``iommu_group`` ->
``../../../kernel/iommu_groups/N``, ``iommu_groups/N/devices/<addr>`` ->
``../../../../devices/...``), plus ``proc/cmdline``, ``proc/cpuinfo``,
``proc/sys/kernel/osrelease``, ``dmesg.txt``, ``boot/config-<rel>``,
``lib/modules/<rel>/modules.{dep,builtin}`` and ``dev/vfio/`` stand-ins.

Sources: the seed walkthrough (seed/000_a192a4a50d4567ed.txt): T10 10de:1e37 subsys
10de:1370 rev a1 at 82:00.0 with BARs 16M / 16G 64-bit pref / 32M 64-bit pref (its
guest `lspci -nnv`), P10 10de:1b39 subsys 10de:1217 at 05:00.0 alone in IOMMU group 59,
the DMAR lines of both boots, the GRUB command line, kernel 6.10.5 with VFIO=m and
INTEL_IOMMU_DEFAULT_ON=y; P10 BAR1 32G (docs/explanation/p10-mmio.md).  Root ports, PCH and NIC ids
are the DL380 Gen9's Xeon E5 v4 / C610 parts as pci.ids names them.  Bus numbers of
the root ports and group numbers other than 59 are illustrative.
"""
from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

G, M = 1 << 30, 1 << 20
MEM32, MEM64P, IO = 0x40200, 0x14220C, 0x40101   # resource flags the kernel prints


@dataclass
class Dev:
    addr: str                       # 0000:bb:dd.f
    ids: str                        # vendor:device
    cls: int                        # 0x030200
    subsys: str = "0000:0000"
    rev: int = 0x01
    driver: str | None = None
    group: int | None = None
    numa: int = -1
    bars: list = field(default_factory=list)   # (index, size, flags[, unassigned])
    parent: str | None = None       # address of the bridge above, None = root bus


def _config(d: Dev, bar_addr: dict, multifunction: bool) -> bytes:
    """The first 256 bytes of config space: type 0/1 header, BARs, subsystem ids, no capabilities."""
    v, dv = (int(x, 16) for x in d.ids.split(":"))
    bridge = d.cls >> 8 == 0x0604
    cfg = bytearray(256)
    struct.pack_into("<HHH", cfg, 0, v, dv, 0x0007 if d.driver else 0)     # ids, command
    cfg[0x08] = d.rev
    cfg[0x09:0x0C] = d.cls.to_bytes(3, "little")                           # prog-if, subclass, base
    cfg[0x0E] = (0x01 if bridge else 0x00) | (0x80 if multifunction else 0)
    for index, _size, flags, *rest in d.bars:
        if index > (1 if bridge else 5):
            continue
        base = 0 if rest and rest[0] else bar_addr.get((d.addr, index), 0)
        if flags & 0x100:
            low = (base & 0xFFFFFFFC) | 0x1
        else:
            low = (base & 0xFFFFFFF0) | (0x4 if flags & 0x100000 else 0) | (0x8 if flags & 0x2000 else 0)
        struct.pack_into("<I", cfg, 0x10 + 4 * index, low)
        if flags & 0x100000:
            struct.pack_into("<I", cfg, 0x14 + 4 * index, base >> 32)
    if not bridge:
        sv, sd = (int(x, 16) for x in d.subsys.split(":"))
        struct.pack_into("<HH", cfg, 0x2C, sv, sd)
        cfg[0x3D] = 1                                                          # INTA#
    return bytes(cfg)


def _rel(frm: Path, to: Path) -> str:
    return os.path.relpath(to, frm)


def write_root(dest: Path, devs: list[Dev], *, cmdline: str, cpuinfo: str, dmesg: str | None,
               release: str, config: str | None, modules_dep: str, modules_builtin: str,
               iommu: bool = True, numa: dict[int, str] | None = None,
               hugepages: dict[int, dict[int, tuple[int, int]]] | None = None, node_kib: int = 64 << 20) -> Path:
    """Lay ``devs`` and the text files out under ``dest`` (created; must not exist).

    ``numa`` (node -> CPU list) adds ``sys/devices/system/node``, each device's ``local_cpulist``
    and ``proc/meminfo``; ``hugepages`` (node -> {size in kB: (reserved, free)}) the huge page pools.
    """
    dest.mkdir(parents=True)
    sysd = dest / "sys"
    by_addr = {d.addr: d for d in devs}
    mmio = {"32": 0x90000000, "64": 0x38000000000}
    bar_addr: dict = {}

    def devdir(d: Dev) -> Path:
        chain, cur = [], d
        while cur is not None:
            chain.append(cur.addr)
            cur = by_addr.get(cur.parent) if cur.parent else None
        return sysd / "devices" / f"pci{chain[-1][:7]}" / Path(*reversed(chain))

    for d in devs:
        path = devdir(d)
        path.mkdir(parents=True, exist_ok=True)
        lines = [(0, 0, 0)] * (17 if d.cls >> 8 == 0x0604 else 7)
        for index, size, flags, *rest in d.bars:
            if rest and rest[0]:      # unassigned: the kernel keeps the size, start 0
                lines[index] = (0, size - 1, flags)
                continue
            key = "64" if flags & 0x100000 else "32"
            start = (mmio[key] + size - 1) // size * size
            mmio[key] = start + size
            bar_addr[(d.addr, index)] = start
            lines[index] = (start, start + size - 1, flags)
        v, dv = d.ids.split(":")
        sv, sd = d.subsys.split(":")
        attrs = {"vendor": f"0x{v}", "device": f"0x{dv}", "class": f"0x{d.cls:06x}",
                 "subsystem_vendor": f"0x{sv}", "subsystem_device": f"0x{sd}", "revision": f"0x{d.rev:02x}",
                 "irq": "0" if d.cls >> 8 == 0x0604 else "32", "numa_node": str(d.numa),
                 "enable": "1" if d.driver else "0", "driver_override": "(null)",
                 "modalias": f"pci:v0000{v.upper()}d0000{dv.upper()}sv0000{sv.upper()}sd0000{sd.upper()}"
                             f"bc{d.cls >> 16:02X}sc{d.cls >> 8 & 0xff:02X}i{d.cls & 0xff:02X}",
                 "resource": "".join(f"0x{a:016x} 0x{b:016x} 0x{c:016x}\n" for a, b, c in lines)}
        if numa:   # the kernel prints every CPU for a device on no node
            attrs["local_cpulist"] = numa.get(d.numa) or ",".join(numa.values())
        for name, text in attrs.items():
            (path / name).write_text(text if name == "resource" else text + "\n")
        multi = any(o.addr[:-1] == d.addr[:-1] and o is not d for o in devs) and d.addr.endswith(".0")
        (path / "config").write_bytes(_config(d, bar_addr, multi))
        link = sysd / "bus/pci/devices" / d.addr
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(_rel(link.parent, path))
        if d.driver:
            drv = sysd / "bus/pci/drivers" / d.driver
            drv.mkdir(parents=True, exist_ok=True)
            (path / "driver").symlink_to(_rel(path, drv))
            (drv / d.addr).symlink_to(_rel(drv, path))
        if iommu and d.group is not None:
            gdir = sysd / "kernel/iommu_groups" / str(d.group)
            (gdir / "devices").mkdir(parents=True, exist_ok=True)
            (gdir / "type").write_text("identity\n" if "iommu=pt" in cmdline else "DMA\n")
            (path / "iommu_group").symlink_to(_rel(path, gdir))
            (gdir / "devices" / d.addr).symlink_to(_rel(gdir / "devices", path))
    if iommu and any(d.driver == "vfio-pci" for d in devs):
        (dest / "dev/vfio").mkdir(parents=True)
        (dest / "dev/vfio/vfio").write_text("")
        for g in sorted({d.group for d in devs if d.driver == "vfio-pci" and d.group is not None}):
            (dest / "dev/vfio" / str(g)).write_text("")  # device nodes saved as empty files
    texts = {"proc/cmdline": cmdline + "\n", "proc/cpuinfo": cpuinfo, "proc/sys/kernel/osrelease": release + "\n",
             f"lib/modules/{release}/modules.dep": modules_dep, f"lib/modules/{release}/modules.builtin": modules_builtin}
    if dmesg is not None:
        texts["dmesg.txt"] = dmesg
    if config is not None:
        texts[f"boot/config-{release}"] = config
    if numa:
        texts.update(_numa_texts(numa, hugepages or {}, node_kib))
    for rel, text in texts.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    return dest


def _numa_texts(numa: dict[int, str], hugepages: dict[int, dict[int, tuple[int, int]]], node_kib: int) -> dict[str, str]:
    """sys/devices/system/node, sys/kernel/mm/hugepages and proc/meminfo as Linux 6.x prints them."""
    node = "sys/devices/system/node"
    span = f"{min(numa)}-{max(numa)}" if len(numa) > 1 else str(min(numa))
    out = {f"{node}/online": span + "\n", f"{node}/possible": span + "\n"}
    sizes = sorted({kib for pools in hugepages.values() for kib in pools} | {2048, 1048576})
    total: dict[int, list[int]] = {kib: [0, 0] for kib in sizes}
    for n, cpus in numa.items():
        out[f"{node}/node{n}/cpulist"] = cpus + "\n"
        for kib in sizes:
            nr, free = hugepages.get(n, {}).get(kib, (0, 0))
            total[kib][0] += nr
            total[kib][1] += free
            out[f"{node}/node{n}/hugepages/hugepages-{kib}kB/nr_hugepages"] = f"{nr}\n"
            out[f"{node}/node{n}/hugepages/hugepages-{kib}kB/free_hugepages"] = f"{free}\n"
    for kib, (nr, free) in total.items():
        out[f"sys/kernel/mm/hugepages/hugepages-{kib}kB/nr_hugepages"] = f"{nr}\n"
        out[f"sys/kernel/mm/hugepages/hugepages-{kib}kB/free_hugepages"] = f"{free}\n"
    mem = node_kib * len(numa)
    used = sum(nr * kib for kib, (nr, _) in total.items())
    out["proc/meminfo"] = "".join(f"{k + ':':<16}{v:>8}{' kB' if k.startswith(('Mem', 'Huge', 'Hugetlb')) and not k.startswith('HugePages_') else ''}\n" for k, v in [
        ("MemTotal", mem), ("MemFree", mem - used - (2 << 20)), ("MemAvailable", mem - used - (1 << 20)),
        ("HugePages_Total", total[2048][0]), ("HugePages_Free", total[2048][1]), ("HugePages_Rsvd", 0),
        ("HugePages_Surp", 0), ("Hugepagesize", 2048), ("Hugetlb", used)])
    return out


def build(name: str, dest: str | os.PathLike) -> Path:
    """Build fixture ``name`` (see ``names()``) at ``dest`` and return ``dest``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fixture_data import FIXTURES, bench_host  # the data lives beside this script

    dest = Path(dest)
    if name == "bench":
        return write_root(dest, **bench_host())
    return write_root(dest, **FIXTURES[name]())


def names() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fixture_data import FIXTURES

    return [*FIXTURES, "bench"]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} DEST [{'|'.join(names())} ...]")
    wanted = sys.argv[2:] or names()
    unknown = sorted(set(wanted) - set(names()))
    if unknown:
        sys.exit(f"error: unknown fixture {', '.join(unknown)}; choose from {', '.join(names())}")
    taken = [str(Path(sys.argv[1]) / n) for n in wanted if (Path(sys.argv[1]) / n).exists()]
    if taken:
        sys.exit(f"error: {', '.join(taken)} already exists; remove it or pick another DEST")
    for n in wanted:
        print(build(n, Path(sys.argv[1]) / n))
