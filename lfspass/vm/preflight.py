"""Checks of one planned VM against the files it already has, run for every VM before any is written."""
from __future__ import annotations

import os

from lfspass import fsutil
from lfspass.errors import VmError
from lfspass.vm.guest_disk import data_extents, parse_size, virtual_size, human
from lfspass.vm.firmware import check_vars
from lfspass.vm.install import REINSTALL_ENV, iso_path, marker_path, only_unfinished_install
from lfspass.vm.libvirt_access import qemu_ids
from lfspass.vm.plan import VmPlan


def install_pending(plan: VmPlan) -> bool:
    """An unattended install would run on the next `doit vm`."""
    inst = plan.vm.installer
    return (inst.source in ("netboot", "iso") and inst.unattended
            and (not marker_path(plan).exists() or bool(os.environ.get(REINSTALL_ENV))))


def preflight(plan: VmPlan) -> None:
    """Every refusal the VM's tasks would meet later (disk size, VARS, a disk holding data)."""
    iso_path(plan)  # an ISO URL without a sum is refused here, before any download
    if plan.vm.libvirt:
        qemu_ids(f"{plan.where}.libvirt")  # no libvirt QEMU user on this host: refused before any write
    fw = plan.firmware
    # QEMU writes the VARS file and the disk: a link below the root may not lead it out of the root.
    for path in (plan.disk, plan.dir) if fw.bios else (fw.vars, plan.disk, plan.dir):
        fsutil.beneath(plan.recipe.root, path)
    if fw.vars_template.exists() and fw.code.exists():
        check_vars(fw)
    if plan.dir.exists() and not plan.dir.is_dir():
        raise VmError(f"{plan.where}.dir: {plan.dir} is a file, not a folder; set [[vms]] dir elsewhere or move it")
    if not (plan.disk.exists() or plan.disk.is_symlink()):
        return
    want, have = parse_size(plan.vm.disk.size, f"{plan.where}.disk.size"), virtual_size(plan.disk)
    if have != want:
        hint = (f"grow it with `qemu-img resize {plan.disk} {human(want)}` (then grow the guest's partition)"
                if want > have else "shrinking loses data: set the size back, or make a new image yourself")
        raise VmError(f"{plan.disk} holds {human(have)} but {plan.where}.disk.size asks for {plan.vm.disk.size}; "
                      f"lfspass does not change existing disks: {hint}")
    if install_pending(plan):
        used = data_extents(plan.disk)
        # A disk only an unfinished install wrote (it was empty when that began) is installed over.
        if used and not (os.environ.get(REINSTALL_ENV) and plan.vm.installer.overwrite) and \
                not only_unfinished_install(plan):
            raise VmError(
                f"{plan.disk} already holds data ({sum(n for _, n in used)} bytes written) and "
                f"{plan.where}.installer would partition it, so nothing was started. Either point "
                f"{plan.where}.disk.path at a new image (or set installer.unattended = false), or to install "
                f"over it on purpose set installer.overwrite = true and run with {REINSTALL_ENV}=1 "
                "(lfspass snapshots the disk first)")
