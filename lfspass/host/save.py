"""Save what `lfspass doctor` reads from a host into a small folder that `--host-root` reads back.

Saved layout (every path relative to DIR, which stands for ``/``; a shell script in a
busybox guest may produce the same tree; files that cannot be read are left out and
doctor then reports ``unknown`` for what needed them):

* ``sys/bus/pci/devices/<dddd:bb:dd.f>``: symlink, with the kernel's own relative text,
  e.g. ``../../../devices/pci0000:00/0000:00:02.0/0000:05:00.0``.
* ``sys/devices/pci<dddd:bb>/[<bridge>/...]<addr>/``: a plain folder per device with
  these files copied byte for byte: ``vendor device class subsystem_vendor
  subsystem_device revision irq numa_node resource enable driver_override modalias
  local_cpulist boot_vga`` (those that exist) and ``config`` cut to its first 256 bytes
  (the standard header and capabilities; lspci needs ``config``, ``irq`` and ``resource``).
* ``<device folder>/driver``: symlink with the kernel's relative text,
  ``../../../bus/pci/drivers/<driver>`` (one ``../`` more per bridge level); the folder
  ``sys/bus/pci/drivers/<driver>/`` exists (empty) so the link resolves.
* ``<device folder>/iommu_group``: symlink ``../../../kernel/iommu_groups/<N>`` (same rule).
* ``sys/kernel/iommu_groups/<N>/devices/<addr>``: symlink
  ``../../../../devices/pci.../<addr>``; ``sys/kernel/iommu_groups/<N>/type`` copied.
  No ``iommu_groups`` folder = the IOMMU was off.
* ``proc/cmdline``, ``proc/cpuinfo``, ``proc/sys/kernel/osrelease`` (``uname -r``) and
  ``proc/config.gz`` (when the kernel has IKCONFIG_PROC): copied.
* NUMA and huge pages: ``proc/meminfo``; ``sys/devices/system/node/node<N>/cpulist`` and
  ``.../node<N>/hugepages/hugepages-<size>kB/{nr,free}_hugepages``;
  ``sys/kernel/mm/hugepages/hugepages-<size>kB/{nr,free}_hugepages``: copied.
* ``dmesg.txt``: the output of ``dmesg`` (absent when dmesg was not permitted).
* ``lib/modules/<release>/modules.builtin``, ``lib/modules/<release>/modules.dep`` and
  ``boot/config-<release>``: copied when present.
* ``dev/vfio/<name>``: one empty regular file per entry of ``/dev/vfio`` (``vfio`` and
  each group number) standing in for the device nodes; no ``dev/vfio`` folder = none.
* iommufd: ``dev/iommu`` and ``dev/vfio/devices/vfioN`` as empty files when the nodes exist,
  and ``<device folder>/vfio-dev/vfioN/`` (empty folders) for each device's VFIO cdev.
* ``lfspass-saved.txt``: one line saying where and by what the copy was made.

No other file is read or written; the whole folder is built beside DIR and renamed
into place at the end, so an interrupted save leaves nothing half-written.
"""
from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from pathlib import Path

from lfspass import __version__
from lfspass.errors import HostError
from lfspass.host.read import IOMMU_GROUPS, NODES, PCI_DEVICES, Host

DEVICE_FILES = ("vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision", "irq", "numa_node",
                "resource", "enable", "driver_override", "modalias", "local_cpulist", "boot_vga")
CONFIG_BYTES = 256


def _inside(rel_from: str, target: str) -> str | None:
    """``target`` (a link's text) as a root-relative path, or None if absolute or escaping."""
    if target.startswith("/"):
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(rel_from), target))
    return None if path.startswith("..") else path


def _link_text(host: Host, rel: str) -> str | None:
    try:
        return os.readlink(host.resolve(posixpath.dirname(rel)) / posixpath.basename(rel))
    except OSError:
        return None


def _copy(host: Host, src_rel: str, dst: Path, limit: int = 1 << 24) -> bool:
    data = host.read_bytes(src_rel, limit)
    if data is None:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return True


def _listing(host: Host, rel: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(host.resolve(rel)) if "/" not in n and not n.startswith("."))
    except OSError:
        return []


def _device_dir(host: Host, address: str) -> str:
    """Root-relative folder of a device as the kernel nests it (falls back to a flat one)."""
    rel = f"{PCI_DEVICES}/{address}"
    text = _link_text(host, rel)
    return (_inside(rel, text) if text else None) or f"sys/devices/pci{address[:7]}/{address}"


def _save_device(host: Host, tmp: Path, address: str) -> str:
    folder_rel = _device_dir(host, address)
    folder = tmp / folder_rel
    folder.mkdir(parents=True, exist_ok=True)
    link = tmp / PCI_DEVICES / address
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(posixpath.relpath(folder_rel, PCI_DEVICES))
    src = f"{PCI_DEVICES}/{address}"
    for name in DEVICE_FILES:
        _copy(host, f"{src}/{name}", folder / name, 65536)
    _copy(host, f"{src}/config", folder / "config", CONFIG_BYTES)
    for name in _listing(host, f"{src}/vfio-dev"):   # the device's VFIO cdev (iommufd)
        if name.startswith("vfio"):
            (folder / "vfio-dev" / name).mkdir(parents=True, exist_ok=True)
    for name, target_dir in (("driver", "sys/bus/pci/drivers"), ("iommu_group", IOMMU_GROUPS)):
        text = _link_text(host, f"{src}/{name}")
        if not text:
            continue
        target = f"{target_dir}/{posixpath.basename(text)}"
        (tmp / target).mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(posixpath.relpath(target, folder_rel))
    return folder_rel


def check_dest(dest: str | os.PathLike) -> Path:
    """``dest`` as a Path, or HostError when it exists and is not an empty folder."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise HostError(f"--save {dest}: exists and is not an empty folder; name a new folder")
    return dest


def _numa_files(host: Host) -> list[str]:
    """The node CPU lists and huge page counts doctor's tuning checks read."""
    out = []
    pools = [("sys/kernel/mm/hugepages", p) for p in _listing(host, "sys/kernel/mm/hugepages")]
    for node in host.numa_nodes:
        out.append(f"{NODES}/node{node}/cpulist")
        pools += [(f"{NODES}/node{node}/hugepages", p) for p in _listing(host, f"{NODES}/node{node}/hugepages")]
    for base, pool in pools:
        if pool.startswith("hugepages-") and pool.endswith("kB") and "/" not in pool:
            out += [f"{base}/{pool}/nr_hugepages", f"{base}/{pool}/free_hugepages"]
    return out


def save_host(host: Host, dest: str | os.PathLike) -> Path:
    """Copy what doctor reads from ``host`` into ``dest`` (new or empty folder); return ``dest``."""
    dest = check_dest(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    except OSError as exc:
        raise HostError(f"--save {dest}: cannot create it ({exc.strerror}); pick a writable folder") from None
    try:
        folders = {a: _save_device(host, tmp, a) for a in host.addresses}
        for number, members in host.iommu_groups.items():
            gdir = tmp / IOMMU_GROUPS / str(number)
            (gdir / "devices").mkdir(parents=True, exist_ok=True)
            _copy(host, f"{IOMMU_GROUPS}/{number}/type", gdir / "type", 4096)
            for address in members:
                target = folders.get(address) or _device_dir(host, address)
                (gdir / "devices" / address).symlink_to(posixpath.relpath(target, f"{IOMMU_GROUPS}/{number}/devices"))
        for rel in ("proc/cmdline", "proc/cpuinfo", "proc/sys/kernel/osrelease", "proc/config.gz", "proc/meminfo",
                    *_numa_files(host)):
            _copy(host, rel, tmp / rel)
        rel_ver = host.release
        if rel_ver:
            for rel in (f"lib/modules/{rel_ver}/modules.builtin", f"lib/modules/{rel_ver}/modules.dep",
                        f"boot/config-{rel_ver}"):
                _copy(host, rel, tmp / rel)
        log = host.kernel_log
        if log is not None:
            (tmp / "dmesg.txt").write_text(log)
        names = host.dev_vfio()
        if names is not None:
            (tmp / "dev/vfio").mkdir(parents=True)
            for name in sorted(names):
                if "/" not in name and not name.startswith(".") and name != "devices":
                    (tmp / "dev/vfio" / name).write_bytes(b"")
            cdevs = [n for n in _listing(host, "dev/vfio/devices") if n.startswith("vfio")]
            if cdevs:
                (tmp / "dev/vfio/devices").mkdir()
            for name in cdevs:
                (tmp / "dev/vfio/devices" / name).write_bytes(b"")
        if os.path.lexists(host.resolve("dev/iommu")):
            (tmp / "dev").mkdir(exist_ok=True)
            (tmp / "dev/iommu").write_bytes(b"")
        (tmp / "lfspass-saved.txt").write_text(f"saved by lfspass {__version__} doctor --save from {host.root}\n")
        os.chmod(tmp, 0o755)   # mkdtemp made it private; the copy is meant to be shared
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def folder_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(files, bytes) under ``path``, links not followed."""
    files = size = 0
    for base, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(base, name)).st_size
    return files, size
