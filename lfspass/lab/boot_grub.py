"""One lab boot through real GRUB under OVMF: install the initramfs under the root's /boot, bring the
boot disk up to date, boot it, read grubenv back, and say which menu entry GRUB booted."""
from __future__ import annotations

import shutil
from pathlib import Path

from lfspass import journal
from lfspass.boot.env import parse_env
from lfspass.errors import ToolFailed
from lfspass.lab import boot_disk
from lfspass.lab.grub_entry import entry_booted, kernel_cmdline
from lfspass.lab.qemu_run import GuestFiles, extract_host, machine_argv, run_qemu
from lfspass.recipe import Recipe

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def grub_argv(esp: Path, disk: Path, vars_fd: Path, console_log: Path, host_out: Path, iommu: bool = True,
              memory: str = "256M", accel: str = "tcg") -> list[str]:
    """The lab machine under OVMF (CODE read-only, a VARS copy), ESP and /boot image as virtio disks."""
    if not OVMF_CODE.is_file():
        raise ToolFailed(f"{OVMF_CODE} missing: apt-get install ovmf")
    firmware = ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={vars_fd}"]
    disks = ["-drive", f"file={esp},format=raw,if=virtio,readonly=on", "-drive", f"file={disk},format=raw,if=virtio"]
    return machine_argv(console_log, host_out, iommu, memory, accel, firmware, disks)


def fresh_vars(dest: Path) -> Path:
    shutil.copyfile(OVMF_VARS, dest)
    return dest


def install_initrd(recipe: Recipe, initramfs: Path) -> Path:
    """Copy the lab's busybox initramfs to the root at ``[boot] initrd`` (the GRUB entry's initrd line)."""
    dest = recipe.root / recipe.boot.initrd.lstrip("/")
    journal.copy_atomic(recipe.root, initramfs, dest, mode=0o644)
    return dest


def grub_boot(recipe: Recipe, files: GuestFiles, disk: Path, initramfs: Path, iommu: bool, label: str) -> dict:
    """Boot once through GRUB; the console log and the decoded host state land in ``files``."""
    root = recipe.root
    install_initrd(recipe, initramfs)
    esp = boot_disk.grub_esp(disk.parent / "esp.img", recipe.boot.fs_uuid)
    sync = boot_disk.sync_disk(root, disk, recipe.boot.fs_uuid)
    env_before = parse_env(boot_disk.read_image_env(disk))
    log, host_out = files.guest_log, files.host_out
    argv = grub_argv(esp, disk, fresh_vars(files.dir / "OVMF_VARS.fd"), log, host_out, iommu,
                     recipe.lab.memory, recipe.lab.accel)
    print(f"lab: {label}: booting through GRUB under OVMF ({'emulated VT-d' if iommu else 'NO IOMMU'}); "
          f"/boot image {disk.name} ({sync}), grubenv before: {env_before}", flush=True)
    boot_s = run_qemu(argv, log, host_out, recipe.lab.timeout)
    with journal.run(root, f"lab: grubenv read back from {disk.name} after {label}"):
        env_after = parse_env(boot_disk.read_back_env(root, disk))
    cmdline = kernel_cmdline(log)
    booted = entry_booted(recipe, cmdline)
    print(f"lab: {label}: GRUB booted entry {booted['id']} ({booted['title']}); grubenv after: {env_after}", flush=True)
    # Decoded last: what GRUB left in grubenv is read back even when the guest sent nothing.
    extract_host(host_out, files.saved, log)
    return {"booted": booted, "cmdline": cmdline, "grubenv_before": env_before, "grubenv_after": env_after,
            "disk": str(disk), "disk_sync": sync, "boot_s": round(boot_s, 2), "qemu": argv,
            "guest_log": str(log), "host_out": str(host_out)}
