"""Read a host's PCI devices, IOMMU groups, kernel and log from a root folder (live `/` or saved).

A root is a folder that stands for ``/``: the live host, or a copy made by
``lfspass doctor --save`` (layout documented in :mod:`lfspass.hostsave`).  Every
attribute is read defensively: a missing, truncated or garbled file gives ``None``
(which checks report as ``unknown``), never an exception.  Symlinks inside a saved
root are resolved against that root, so a link can never lead to the real ``/sys``.
"""
from __future__ import annotations

import functools
import gzip
import os
import posixpath
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HostError
from .pciids import PciIds

PCI_DEVICES = "sys/bus/pci/devices"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
# resource flags (include/linux/ioport.h)
IORESOURCE_IO, IORESOURCE_MEM = 0x100, 0x200
IORESOURCE_PREFETCH, IORESOURCE_MEM_64 = 0x2000, 0x100000
IORESOURCE_UNSET = 0x20000000
_ADDR = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
_HEX = re.compile(r"^0x([0-9a-fA-F]+)$")
_RES_LINE = re.compile(r"^0x([0-9a-fA-F]{1,16}) 0x([0-9a-fA-F]{1,16}) 0x([0-9a-fA-F]{1,16})$")


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
    revision: int | None = None
    driver: str | None = None         # basename of the driver link; None = no driver
    iommu_group: int | None = None
    numa_node: int | None = None
    bars: list[Bar] | None = None     # None = resource file missing or garbled
    name: str = ""                    # 'NVIDIA Corporation GP102GL [Tesla P10]'
    class_name: str = ""              # '3D controller'

    @property
    def id(self) -> str | None:
        return f"{self.vendor}:{self.device}" if self.vendor and self.device else None

    @property
    def is_bridge(self) -> bool:
        return self.pci_class is not None and self.pci_class >> 8 == 0x0604


class Host:
    """One root folder standing for ``/``; reads are cached per instance."""

    def __init__(self, root: str | os.PathLike = "/", pci_ids: PciIds | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise HostError(f"--host-root {root}: no such folder; give `/` for this host "
                            "or a folder made by `lfspass doctor --save`")
        self.live = self.root.resolve() == Path("/")
        self.ids = pci_ids or PciIds()

    # -- paths ---------------------------------------------------------------------------
    def resolve(self, rel: str) -> Path:
        """``rel`` (relative to the root) with every symlink resolved inside the root.

        Absolute and ``..``-heavy links are clamped at the root, as if the root were ``/``.
        """
        if self.live:
            return Path("/", rel)
        parts, done, hops = [p for p in rel.split("/") if p], [], 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = self.root.joinpath(*done, part)
            if here.is_symlink():
                hops += 1
                if hops > 40:  # a link loop: name a path that cannot exist rather than let the OS follow it
                    return self.root / ".lfspass-link-loop"
                target = os.readlink(here)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            done.append(part)
        return self.root.joinpath(*done)

    def read(self, rel: str, limit: int = 1 << 22) -> str | None:
        """Text of a file below the root, or None when it is missing or unreadable."""
        try:
            with open(self.resolve(rel), "rb") as fh:
                return fh.read(limit).decode("utf-8", "replace")
        except OSError:
            return None

    def link_name(self, rel: str) -> str | None:
        """Basename of a symlink's target (``driver``, ``iommu_group``), or None."""
        try:
            return posixpath.basename(os.readlink(self.resolve(posixpath.dirname(rel)) / posixpath.basename(rel)))
        except OSError:
            return None

    # -- PCI -------------------------------------------------------------------------------
    def _hex(self, base: str, attr: str, digits: int) -> str | None:
        m = _HEX.match((self.read(f"{base}/{attr}", 64) or "").strip())
        return m.group(1).lower().zfill(digits) if m and len(m.group(1)) <= digits else None

    def _int(self, base: str, attr: str) -> int | None:
        text = (self.read(f"{base}/{attr}", 64) or "").strip()
        return int(text) if re.fullmatch(r"-?\d{1,6}", text) else None

    def pci_device(self, address: str) -> PciDevice | None:
        base = f"{PCI_DEVICES}/{address}"
        if not self.resolve(base).is_dir():
            return None
        dev = PciDevice(address=address)
        dev.vendor, dev.device = self._hex(base, "vendor", 4), self._hex(base, "device", 4)
        cls = self._hex(base, "class", 6)
        dev.pci_class = int(cls, 16) if cls else None
        dev.subsystem_vendor = self._hex(base, "subsystem_vendor", 4)
        dev.subsystem_device = self._hex(base, "subsystem_device", 4)
        rev = self._hex(base, "revision", 2)
        dev.revision = int(rev, 16) if rev else None
        dev.driver = self.link_name(f"{base}/driver")
        group = self.link_name(f"{base}/iommu_group")
        dev.iommu_group = int(group) if group and group.isdigit() else None
        dev.numa_node = self._int(base, "numa_node")
        dev.bars = parse_resource(self.read(f"{base}/resource", 8192))
        dev.name = self.ids.long_name(dev.vendor, dev.device)
        dev.class_name = self.ids.class_name(dev.pci_class) or (f"Class {dev.pci_class >> 8:04x}" if dev.pci_class is not None else "")
        return dev

    @functools.cached_property
    def addresses(self) -> list[str]:
        try:
            names = os.listdir(self.resolve(PCI_DEVICES))
        except OSError:
            return []
        return sorted(n for n in names if _ADDR.match(n))

    @functools.cached_property
    def devices(self) -> dict[str, PciDevice]:
        """Every PCI device by full address, in address order."""
        return {a: d for a in self.addresses if (d := self.pci_device(a)) is not None}

    def find_id(self, pci_id: str) -> list[PciDevice]:
        return [d for d in self.devices.values() if d.id == pci_id.lower()]

    @functools.cached_property
    def iommu_groups(self) -> dict[int, list[str]]:
        """Group number -> member addresses (from ``iommu_groups/N/devices``); {} = IOMMU off."""
        out: dict[int, list[str]] = {}
        try:
            groups = os.listdir(self.resolve(IOMMU_GROUPS))
        except OSError:
            return out
        for g in sorted((g for g in groups if g.isdigit()), key=int):
            try:
                out[int(g)] = sorted(n for n in os.listdir(self.resolve(f"{IOMMU_GROUPS}/{g}/devices")) if _ADDR.match(n))
            except OSError:
                out[int(g)] = []
        return out

    # -- CPU, kernel, log --------------------------------------------------------------------
    @functools.cached_property
    def cmdline(self) -> str | None:
        text = self.read("proc/cmdline", 65536)
        return text.strip() if text is not None else None

    @functools.cached_property
    def cpu_flags(self) -> set[str] | None:
        """Union of the ``flags`` lines of /proc/cpuinfo; None when it cannot be read."""
        text = self.read("proc/cpuinfo")
        if text is None:
            return None
        flags = [line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags") and ":" in line]
        return set().union(*flags) if flags else None

    @functools.cached_property
    def release(self) -> str | None:
        """Running kernel release: ``proc/sys/kernel/osrelease``, else the one ``lib/modules`` folder."""
        text = self.read("proc/sys/kernel/osrelease", 256)
        if text and text.strip():
            return text.strip()
        try:
            vers = sorted(os.listdir(self.resolve("lib/modules")))
        except OSError:
            return None
        return vers[0] if len(vers) == 1 else None

    def _modnames(self, name: str) -> set[str] | None:
        text = self.read(f"lib/modules/{self.release}/{name}", 1 << 24) if self.release else None
        if text is None:
            return None
        # kernel/drivers/vfio/pci/vfio-pci.ko.xz: deps -> vfio_pci (modprobe treats - and _ alike)
        return {posixpath.basename(line.split(":")[0].strip()).split(".ko")[0].replace("-", "_")
                for line in text.splitlines() if line.strip()}

    @functools.cached_property
    def modules_builtin(self) -> set[str] | None:
        return self._modnames("modules.builtin")

    @functools.cached_property
    def modules_loadable(self) -> set[str] | None:
        return self._modnames("modules.dep")

    @functools.cached_property
    def kernel_config(self) -> dict[str, str] | None:
        """``CONFIG_X -> value`` from ``boot/config-<release>`` (or ``proc/config.gz``); None if neither."""
        text = self.read(f"boot/config-{self.release}", 1 << 24) if self.release else None
        if text is None:
            try:
                text = gzip.decompress(self.resolve("proc/config.gz").read_bytes()).decode("utf-8", "replace")
            except (OSError, EOFError, gzip.BadGzipFile):
                return None
        cfg = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                key, value = line.split("=", 1)
                cfg[key] = value.strip().strip('"')
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                cfg[line[2:-11]] = "n"
        return cfg

    @functools.cached_property
    def kernel_log(self) -> str | None:
        """The kernel log: ``dmesg`` on the live host, ``dmesg.txt`` in a saved root; None = unknown."""
        if not self.live:
            return self.read("dmesg.txt", 1 << 24)
        try:
            proc = subprocess.run(["dmesg"], capture_output=True, text=True, errors="replace", timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        # dmesg_restrict=1 for non-root: "Operation not permitted" and exit 1
        return proc.stdout if proc.returncode == 0 else None

    def dev_vfio(self) -> set[str] | None:
        """Names under ``dev/vfio`` (group numbers and ``vfio``); None when the folder is absent."""
        try:
            return set(os.listdir(self.resolve("dev/vfio")))
        except OSError:
            return None
