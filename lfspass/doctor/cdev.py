"""Doctor's iommufd checks: ``/dev/iommu``, and each vfio-pci device's cdev (``vfio-dev/vfioN`` in its
sysfs folder, ``/dev/vfio/devices/vfioN`` for QEMU's iommufd backend).

They run when the recipe asks for ``vfio_backend = "iommufd"`` or the host's kernel has
IOMMUFD (or a /dev/iommu): a group-only host gets no noise.  Failures are failures only when
the recipe asks for iommufd; otherwise the group path still works and they are warnings.
"""
from __future__ import annotations

import os
from typing import Any

from lfspass.doctor.devices import label, locate
from lfspass.host.read import Host, PciDevice
from lfspass.model import Check, Status
from lfspass.pci import short_address

BACKEND_FIX = ('set [kernel] vfio_backend = "iommufd" in the recipe and rebuild (IOMMUFD needs kernel 6.2 or '
               "later, the VFIO cdev 6.6 or later), or keep the group path")


def _asked(recipe: Any) -> bool:
    return getattr(getattr(recipe, "kernel", None), "vfio_backend", "group") == "iommufd"


def _names(host: Host, rel: str) -> list[str] | None:
    try:
        return sorted(os.listdir(host.resolve(rel)))
    except OSError:
        return None


def _node(host: Host, rel: str) -> bool:
    return os.path.lexists(host.resolve(rel))   # a character device live, an empty file in a saved root


def wanted(host: Host, recipe: Any) -> bool:
    cfg = host.kernel_config or {}
    return _asked(recipe) or cfg.get("CONFIG_IOMMUFD") in ("y", "m") or _node(host, "dev/iommu")


def check_dev_iommu(host: Host, recipe: Any) -> Check:
    cid, title = "iommufd", "/dev/iommu (iommufd) exists"
    if _node(host, "dev/iommu"):
        return Check(cid, Status.PASS, title, "/dev/iommu present")
    bad = Status.FAIL if _asked(recipe) else Status.WARN
    if not host.live and not host.resolve("dev").is_dir():
        return Check(cid, Status.UNKNOWN, title, "the saved root has no dev/ listing", "re-save with `lfspass doctor --save`")
    cfg = host.kernel_config
    have = cfg.get("CONFIG_IOMMUFD", "n") if cfg is not None else None   # absent from a .config = not set
    if have in ("y", "m"):
        return Check(cid, bad, title, f"kernel {host.release} has IOMMUFD={have} but there is no /dev/iommu",
                     "modprobe iommufd (vfio loads it when built with it); devtmpfs or udev must create /dev/iommu")
    if have is None:
        return Check(cid, Status.UNKNOWN, title, "no /dev/iommu, and the kernel config is not readable",
                     "keep the kernel's .config in /boot/config-<release>, or build with IKCONFIG_PROC")
    return Check(cid, bad, title, f"no /dev/iommu: kernel {host.release} is built without IOMMUFD", BACKEND_FIX)


def check_cdev(host: Host, dev: PciDevice, lab: str, recipe: Any) -> Check:
    cid, title = f"vfio-cdev[{lab}]", "VFIO device cdev (/dev/vfio/devices/vfioN)"
    where = f"sys/bus/pci/devices/{dev.address}/vfio-dev"
    cdevs = [n for n in _names(host, where) or [] if n.startswith("vfio")]
    if not cdevs:
        have = (host.kernel_config or {}).get("CONFIG_VFIO_DEVICE_CDEV", "n")
        bad = Status.FAIL if _asked(recipe) else Status.WARN
        detail = (f"{short_address(dev.address)} is on vfio-pci but has no {where.rsplit('/', 1)[-1]}/ folder"
                  + ("" if have == "y" else f" (kernel {host.release} has VFIO_DEVICE_CDEV={have})"))
        return Check(cid, bad, title, detail, BACKEND_FIX + "; QEMU's iommufd backend needs the cdev")
    missing = [n for n in cdevs if not _node(host, f"dev/vfio/devices/{n}")]
    if missing and (host.live or host.resolve("dev/vfio").is_dir()):
        n = missing[0]
        return Check(cid, Status.FAIL, title, f"{short_address(dev.address)}: {where}/{n} but no /dev/vfio/devices/{n}",
                     f"devtmpfs or udev creates it; by hand: mkdir -p /dev/vfio/devices && mknod /dev/vfio/devices/{n} c "
                     f"$(tr : ' ' < /{where}/{n}/dev)")
    return Check(cid, Status.PASS, title, f"{short_address(dev.address)}: " + ", ".join(
        f"vfio-dev/{n} -> /dev/vfio/devices/{n}" for n in cdevs))


def cdev_checks(host: Host, recipe: Any, specs: list[Any]) -> list[Check]:
    """The iommufd checks for ``specs`` (the devices doctor checks), or none on a group-only host."""
    if not wanted(host, recipe):
        return []
    out = [check_dev_iommu(host, recipe)]
    for spec in specs:
        dev = locate(host, spec)[0]
        if dev is not None and dev.driver == "vfio-pci":
            out.append(check_cdev(host, dev, label(spec), recipe))
    return out
