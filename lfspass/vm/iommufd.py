"""VFIO's iommufd backend for a VM, used only where the QEMU and the libvirt that will run it have it.

QEMU 9.0 and later list ``iommufd`` under ``qemu-system-x86_64 -object help`` and take
``-object iommufd,id=iommufd0`` plus ``-device vfio-pci,host=…,iommufd=iommufd0``; Debian 12's
QEMU 7.2 has no such object, so its launchers keep the group path (/dev/vfio/N).  libvirt
says it per hostdev, ``<driver name="vfio" iommufd="yes"/>``, from 12.1.0 (the version
virt-install's iommufd test is gated on); an older libvirt gets the plain hostdev.  Both
programs are asked on this host when the launcher is written, and the launcher says which
path it took.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

QEMU = "qemu-system-x86_64"
OBJECT_ID = "iommufd0"
LIBVIRT_IOMMUFD = (12, 1, 0)


@functools.cache
def qemu_objects(path: str) -> frozenset[str] | None:
    """The object types ``path -object help`` lists; None when it does not run."""
    try:
        proc = subprocess.run([path, "-object", "help"], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    lines = proc.stdout.splitlines()
    return frozenset(line.strip() for line in lines[1:] if line.strip() and line.startswith(" "))


def libvirt_version() -> tuple[int, ...] | None:
    """``virsh --version`` as numbers (the libvirt the XML is written for); None without virsh."""
    virsh = shutil.which("virsh")
    return _virsh_version(virsh) if virsh else None


@functools.cache
def _virsh_version(virsh: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([virsh, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(g) for g in m.groups()) if m else None


def choose(plan: Any) -> None:
    """Set ``plan.iommufd`` / ``plan.libvirt_iommufd`` for a VM whose recipe asks for iommufd, and say why."""
    path = shutil.which(QEMU)
    objects = qemu_objects(path) if path else None
    plan.iommufd = bool(objects and "iommufd" in objects)
    if plan.iommufd:
        plan.notes.append(f"vfio_backend = iommufd: {path} lists the iommufd object, so the devices use "
                          f"-object iommufd,id={OBJECT_ID} (/dev/iommu, /dev/vfio/devices/vfioN)")
    else:
        found = f"{path} lists no iommufd object (-object help)" if objects is not None else \
            f"{QEMU} could not be asked (-object help)" if path else f"{QEMU} is not installed"
        plan.notes.append(f"vfio_backend = iommufd, but {found}; QEMU 9.0 and later have it: the group path "
                          "(/dev/vfio/N) is used")
    # libvirt runs the same QEMU (the XML's emulator) and refuses iommufd where that QEMU lacks it.
    version = libvirt_version()
    plan.libvirt_iommufd = plan.iommufd and version is not None and version >= LIBVIRT_IOMMUFD
    if plan.iommufd and not plan.libvirt_iommufd:
        have = "no virsh here" if version is None else f"libvirt {'.'.join(map(str, version))}"
        plan.notes.append(f"the libvirt XML keeps the group path: <driver iommufd=\"yes\"/> needs libvirt "
                          f"{'.'.join(map(str, LIBVIRT_IOMMUFD))} ({have})")
