"""Who holds a PCI device: processes with its device nodes open (``/proc/PID/fd``), and nvidia-persistenced.

Unbinding a driver whose device is in use hangs the write or takes the device from under
its user (nvidia waits for its clients, vfio-pci for QEMU to let go, a DRM driver pulls the
screen from Xorg), so bind, release and rollback ask first and refuse, naming the PIDs.
Which nodes belong to a device is read from sysfs: ``iommu_group`` -> ``/dev/vfio/N``,
``vfio-dev/vfioN`` -> ``/dev/vfio/devices/vfioN``, ``drm/cardN`` -> ``/dev/dri/cardN``;
an NVIDIA driver's nodes are every ``/dev/nvidia*`` (its minor numbers are not in sysfs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import InputError

PERSISTENCED = "nvidia-persistenced"   # keeps every NVIDIA GPU open while it runs


@dataclass(frozen=True)
class Holder:
    pid: int
    comm: str
    node: str       # the device node it has open, or what it holds


def _dev_dir(root: Path, address: str) -> Path:
    return Path(os.path.realpath(root / "sys/bus/pci/devices" / address))


def _names(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def device_nodes(root: str | os.PathLike, address: str, driver: str | None) -> tuple[list[str], list[str]]:
    """(exact nodes, node prefixes) under /dev that stand for the device while on ``driver``."""
    dev = _dev_dir(Path(root), address)
    exact = [f"/dev/dri/{name}" for name in _names(dev / "drm") if name.startswith(("card", "renderD"))]
    prefixes = []
    if driver == "vfio-pci":
        try:
            exact.append("/dev/vfio/" + os.path.basename(os.readlink(dev / "iommu_group")))
        except OSError:
            pass
        exact += [f"/dev/vfio/devices/{name}" for name in _names(dev / "vfio-dev") if name.startswith("vfio")]
    if driver and driver.startswith("nvidia"):
        prefixes.append("/dev/nvidia")
    return exact, prefixes


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return "?"


def holders(root: str | os.PathLike, address: str, driver: str | None) -> list[Holder]:
    """Every process holding the device (by its open nodes, or nvidia-persistenced for an NVIDIA GPU)."""
    root = Path(root)
    exact, prefixes = device_nodes(root, address, driver)
    found: list[Holder] = []
    for name in _names(root / "proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        proc = root / "proc" / name
        comm = _comm(proc)
        if driver and driver.startswith("nvidia") and comm == PERSISTENCED:
            found.append(Holder(int(name), comm, "every NVIDIA GPU"))
            continue
        for fd in _names(proc / "fd"):
            try:
                target = os.readlink(proc / "fd" / fd)
            except OSError:   # gone, or not ours to read
                continue
            if target in exact or any(target.startswith(p) for p in prefixes):
                found.append(Holder(int(name), comm, target))
                break
    return sorted(found, key=lambda h: h.pid)


def describe(found: list[Holder]) -> str:
    return ", ".join(f"PID {h.pid} ({h.comm}) holds {h.node}" for h in found)


def refuse_if_held(root: str | os.PathLike, address: str, driver: str | None, doing: str) -> None:
    """InputError naming the PIDs when something holds the device; nothing was changed yet."""
    found = holders(root, address, driver)
    if not found:
        return
    stop = "; ".join(dict.fromkeys(
        "stop it (systemctl stop nvidia-persistenced, or kill it)" if h.comm == PERSISTENCED
        else f"end PID {h.pid} (shut down the VM, close the program)" for h in found))
    raise InputError(f"cannot {doing} {address} (on {driver or 'no driver'}): it is in use: {describe(found)}; "
                     f"{stop}, then run again; nothing was changed")
