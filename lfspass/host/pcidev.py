"""A PCI device as sysfs describes it: ids, class, driver, group, NUMA node and BARs."""
from __future__ import annotations

import re
from dataclasses import dataclass

# resource flags (include/linux/ioport.h)
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH, IORESOURCE_MEM_64 = 0x2000, 0x100000
IORESOURCE_UNSET = 0x20000000
_RES_LINE = re.compile(r"^0x([0-9a-fA-F]{16}) 0x([0-9a-fA-F]{16}) 0x([0-9a-fA-F]{16})$")  # 0x%016llx, fixed width


@dataclass
class Bar:
    """One line of a device's ``resource`` file (index 0-5 BARs, 6 the ROM, 7+ bridge windows)."""

    index: int
    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1 if self.flags and self.end >= self.start else 0

    @property
    def is_mem(self) -> bool:
        return bool(self.flags & IORESOURCE_MEM)

    @property
    def is_64(self) -> bool:
        return bool(self.flags & IORESOURCE_MEM_64)

    @property
    def prefetch(self) -> bool:
        return bool(self.flags & IORESOURCE_PREFETCH)

    @property
    def unassigned(self) -> bool:
        """The firmware or kernel found no address for it (lspci prints ``<unassigned>``)."""
        return self.size > 0 and (self.start == 0 or bool(self.flags & IORESOURCE_UNSET))


def parse_resource(text: str | None) -> list[Bar] | None:
    """Regions with a size from a ``resource`` file; None when any line is garbled or cut."""
    if text is None:
        return None
    bars = []
    for i, line in enumerate(text.strip("\n").split("\n")):
        m = _RES_LINE.match(line.strip())
        if not m:
            return None
        bar = Bar(i, int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16))
        if bar.size:
            bars.append(bar)
    return bars if text.strip() else None


def human_size(n: int) -> str:
    """16 GiB, 32 MiB, 4 KiB: the sizes lspci prints, with binary units named."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


@dataclass
class PciDevice:
    address: str                      # 0000:bb:dd.f
    vendor: str | None = None         # '10de'
    device: str | None = None         # '1e37'
    pci_class: int | None = None      # 0x030200
    subsystem_vendor: str | None = None
    subsystem_device: str | None = None
    driver: str | None = None         # basename of the driver link; None = no driver
    iommu_group: int | None = None
    numa_node: int | None = None
    local_cpulist: str | None = None  # '14-27,42-55': the CPUs of the device's node
    bars: list[Bar] | None = None     # None = resource file missing or garbled
    name: str = ""                    # 'NVIDIA Corporation GP102GL [Tesla P10]'
    class_name: str = ""              # '3D controller'

    @property
    def id(self) -> str | None:
        return f"{self.vendor}:{self.device}" if self.vendor and self.device else None

    @property
    def is_bridge(self) -> bool:
        return self.pci_class is not None and self.pci_class >> 8 == 0x0604
