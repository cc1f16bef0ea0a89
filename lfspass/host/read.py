"""Read a host's PCI devices, IOMMU groups, kernel and log from a root folder (live `/` or saved).

A root is a folder that stands for ``/``: the live host, or a copy made by
``lfspass doctor --save`` (layout documented in :mod:`lfspass.host.save`).  Every
attribute is read defensively: a missing, truncated or garbled file gives ``None``
(which checks report as ``unknown``), never an exception.  Symlinks inside a saved
root are resolved against that root, so a link can never lead to the real ``/sys``.
"""
from __future__ import annotations

import functools
import gzip
import zlib
import os
import posixpath
import re
import subprocess
from pathlib import Path

from lfspass.errors import HostError
from lfspass.host.pcidev import Bar, PciDevice, human_size, parse_resource
from lfspass.host.pciids import PciIds
from lfspass.model import config_values

__all__ = ["Host", "Bar", "PciDevice", "human_size", "parse_resource", "PCI_DEVICES", "IOMMU_GROUPS"]

PCI_DEVICES = "sys/bus/pci/devices"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
NODES = "sys/devices/system/node"
_ADDR = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
_HEX = re.compile(r"^0x([0-9a-fA-F]+)$")


class Host:
    """One root folder standing for ``/``; reads are cached per instance."""

    def __init__(self, root: str | os.PathLike = "/", pci_ids: PciIds | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise HostError(f"--host-root {root}: no such folder; give `/` for this host "
                            "or a folder made by `lfspass doctor --save`")
        self.live = self.root.resolve() == Path("/")
        if not self.live and not any((self.root / p).exists() for p in ("sys", "proc", "dmesg.txt")):
            raise HostError(f"--host-root {root}: holds no sys/, proc/ or dmesg.txt, so it is not a host root; "
                            "give / or a folder made by `lfspass doctor --save`")
        self.ids = pci_ids or PciIds()

    # -- paths ---------------------------------------------------------------------------
    def resolve(self, rel: str) -> Path:
        """``rel`` (relative to the root) with every symlink resolved inside the root.

        Absolute and ``..``-heavy links are clamped at the root, as if the root were ``/``.
        """
        if self.live:
            return Path("/", rel)
        root = str(self.root)
        parts, hops = [p for p in rel.split("/") if p], 0
        done: list[str] = []
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = os.path.join(root, *done, part)
            if os.path.islink(here):
                hops += 1
                if hops > 40:  # a link loop: name a path that cannot exist rather than let the OS follow it
                    return self.root / ".lfspass-link-loop"
                target = os.readlink(here)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            done.append(part)
        return Path(root, *done)

    def read(self, rel: str, limit: int = 1 << 22) -> str | None:
        """Text of a file below the root, or None when it is missing or unreadable."""
        return self._read_file(self.resolve(rel), limit)

    def read_bytes(self, rel: str, limit: int = 1 << 22) -> bytes | None:
        """Raw bytes of a file below the root (at most ``limit``), or None."""
        return self._read_raw(self.resolve(rel), limit)

    def _read_raw(self, path: str | Path, limit: int) -> bytes | None:
        # In a saved root the last component is opened without following a link:
        # a planted `vendor -> /etc/shadow` must not be read.
        flags = os.O_RDONLY | (0 if self.live else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb", buffering=0) as fh:
                # Chunked: /proc/sys files refuse one huge read (ENOMEM).
                chunks, left = [], limit
                while left > 0 and (chunk := fh.read(min(left, 65536))):
                    chunks.append(chunk)
                    left -= len(chunk)
                return b"".join(chunks)
        except OSError:
            return None

    def _read_file(self, path: str | Path, limit: int) -> str | None:
        raw = self._read_raw(path, limit)
        return raw.decode("utf-8", "replace") if raw is not None else None

    @staticmethod
    def _link_in(folder: Path, name: str) -> str | None:
        try:
            return posixpath.basename(os.readlink(os.path.join(folder, name)))
        except OSError:
            return None

    # -- PCI -------------------------------------------------------------------------------
    def _hex(self, folder: Path, attr: str, digits: int) -> str | None:
        # The kernel prints these with a fixed width (0x%04x, 0x%06x): anything else is cut or garbled.
        m = _HEX.match((self._read_file(os.path.join(folder, attr), 64) or "").strip())
        return m.group(1).lower() if m and len(m.group(1)) == digits else None

    def pci_device(self, address: str) -> PciDevice | None:
        """One device's attributes; each unreadable or garbled one stays None."""
        folder = self.resolve(f"{PCI_DEVICES}/{address}")
        if not folder.is_dir():
            return None
        dev = PciDevice(address=address)
        dev.vendor, dev.device = self._hex(folder, "vendor", 4), self._hex(folder, "device", 4)
        cls = self._hex(folder, "class", 6)
        dev.pci_class = int(cls, 16) if cls else None
        dev.subsystem_vendor = self._hex(folder, "subsystem_vendor", 4)
        dev.subsystem_device = self._hex(folder, "subsystem_device", 4)
        dev.driver = self._link_in(folder, "driver")
        group = self._link_in(folder, "iommu_group")
        dev.iommu_group = int(group) if group and group.isascii() and group.isdigit() else None
        numa = (self._read_file(os.path.join(folder, "numa_node"), 64) or "").strip()
        dev.numa_node = int(numa) if re.fullmatch(r"-?\d{1,6}", numa) else None
        cpus = (self._read_file(os.path.join(folder, "local_cpulist"), 4096) or "").strip()
        dev.local_cpulist = cpus if re.fullmatch(r"[0-9,-]{1,4000}", cpus) else None
        dev.bars = parse_resource(self._read_file(os.path.join(folder, "resource"), 8192))
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
        # isascii: '²'.isdigit() is True but int('²') fails; a garbled name is skipped and
        # kept in garbled_groups for doctor to report, not a crash.
        self.garbled_groups = sorted(g for g in groups if not (g.isascii() and g.isdigit()))
        for g in sorted((g for g in groups if g.isascii() and g.isdigit()), key=int):
            try:
                out[int(g)] = sorted(n for n in os.listdir(self.resolve(f"{IOMMU_GROUPS}/{g}/devices")) if _ADDR.match(n))
            except OSError:
                out[int(g)] = []
        return out

    # -- NUMA and memory ---------------------------------------------------------------------
    @functools.cached_property
    def numa_nodes(self) -> dict[int, str]:
        """Node number -> its CPU list ('0-13,28-41') from sys/devices/system/node; {} = unknown."""
        try:
            names = os.listdir(self.resolve(NODES))
        except OSError:
            return {}
        out = {}
        for name in sorted(n for n in names if re.fullmatch(r"node\d{1,4}", n)):
            cpus = (self.read(f"{NODES}/{name}/cpulist", 4096) or "").strip()
            out[int(name[4:])] = cpus if re.fullmatch(r"[0-9,-]{0,4000}", cpus) else ""
        return dict(sorted(out.items()))

    def hugepage_pool(self, size_kib: int, node: int | None = None) -> tuple[int, int] | None:
        """(reserved, free) huge pages of ``size_kib`` on ``node`` (None = the whole host); None = unknown."""
        rel = f"{NODES}/node{node}/hugepages" if node is not None else "sys/kernel/mm/hugepages"
        nums = [(self.read(f"{rel}/hugepages-{size_kib}kB/{name}_hugepages", 64) or "").strip() for name in ("nr", "free")]
        if all(n.isascii() and n.isdigit() for n in nums):
            return int(nums[0]), int(nums[1])
        info = self.meminfo   # /proc/meminfo speaks of the default size only
        if node is None and info.get("Hugepagesize") == size_kib and {"HugePages_Total", "HugePages_Free"} <= set(info):
            return info["HugePages_Total"], info["HugePages_Free"]
        return None

    @functools.cached_property
    def meminfo(self) -> dict[str, int]:
        """/proc/meminfo as name -> number (kB values in kB, page counts as counts); {} = unknown."""
        out = {}
        for line in (self.read("proc/meminfo", 65536) or "").splitlines():
            m = re.match(r"^([A-Za-z_()0-9]+):\s+(\d{1,20})(?: kB)?$", line.strip())
            if m:
                out[m.group(1)] = int(m.group(2))
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
        self.kernel_config_source = f"boot/config-{self.release}"
        if text is None:
            self.kernel_config_source = "proc/config.gz"
            try:
                text = gzip.decompress(self.resolve("proc/config.gz").read_bytes()).decode("utf-8", "replace")
            except (OSError, EOFError, gzip.BadGzipFile, zlib.error):  # a corrupt copy reads as none
                return None
        return {f"CONFIG_{k}": v for k, v in config_values(text).items()}

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
