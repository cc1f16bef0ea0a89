"""One lab boot through GRUB: install the initramfs under the root's /boot, bring the disk image
up to date, boot it under OVMF, read grubenv back, and say which menu entry GRUB booted."""
from __future__ import annotations

from pathlib import Path

from lfspass import journal
from lfspass.boot.blockfile import read_block
from lfspass.boot.grub import parse_entries
from lfspass.lab import grubboot as G
from lfspass.lab.qemu import END_MARK
from lfspass.recipe import Recipe


def install_initrd(recipe: Recipe, initramfs: Path) -> Path:
    """Copy the lab's busybox initramfs to the root at ``[boot] initrd`` (the GRUB entry's initrd line)."""
    dest = recipe.root / recipe.boot.initrd.lstrip("/")
    journal.copy_atomic(recipe.root, initramfs, dest, mode=0o644)
    return dest


def entry_booted(recipe: Recipe, cmdline: str | None) -> dict:
    """{id, title, kernel} of the lfspass entry whose kernel GRUB booted (BOOT_IMAGE=), or kernel only."""
    image = next((w.split("=", 1)[1] for w in (cmdline or "").split() if w.startswith("BOOT_IMAGE=")), None)
    for e in parse_entries(read_block(recipe.root / recipe.boot.grub_cfg)):
        if image and e.kernel == image:
            return {"id": e.id, "title": e.title, "kernel": image}
    return {"id": None, "title": None, "kernel": image}


def grub_boot(recipe: Recipe, workdir: Path, disk: Path, initramfs: Path, iommu: bool, label: str) -> dict:
    """Boot once through GRUB; the console log and host state land in ``workdir``."""
    root = recipe.root
    install_initrd(recipe, initramfs)
    esp = G.make_esp(disk.parent / "esp.img", recipe.boot.fs_uuid)
    sync = G.sync_disk(root, disk, recipe.boot.fs_uuid)
    env_before = G.read_env_text(G.read_image_env(disk))
    log, host_out = workdir / "guest.log", workdir / "guest-host.b64"
    argv = G.grub_argv(esp, disk, G.fresh_vars(workdir / "OVMF_VARS.fd"), log, host_out, iommu,
                       recipe.lab.memory, recipe.lab.accel)
    print(f"lab: {label}: booting through GRUB under OVMF ({'emulated VT-d' if iommu else 'NO IOMMU'}); "
          f"/boot image {disk.name} ({sync}), grubenv before: {env_before}", flush=True)
    boot_s = G.boot_until_saved(argv, log, host_out, recipe.lab.timeout, END_MARK)
    with journal.run(root, f"lab: grubenv read back from {disk.name} after {label}"):
        env_after = G.read_env_text(G.read_back_env(root, disk))
    cmdline = G.kernel_cmdline(log)
    booted = entry_booted(recipe, cmdline)
    print(f"lab: {label}: GRUB booted entry {booted['id']} ({booted['title']}); grubenv after: {env_after}", flush=True)
    return {"booted": booted, "cmdline": cmdline, "grubenv_before": env_before, "grubenv_after": env_after,
            "disk": str(disk), "disk_sync": sync, "boot_s": round(boot_s, 2), "qemu": argv,
            "guest_log": str(log), "host_out": str(host_out)}
