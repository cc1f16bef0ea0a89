"""The lab's GRUB boot disk (docs/explanation/lab.md): GRUB's EFI image on an ESP, the root's /boot as an ext2
image with the recipe's filesystem UUID (made without root: ``mke2fs -d``), and the grubenv on that
image, written before a boot and read back after it."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from lfspass import journal
from lfspass.diskspace import ensure_room
from lfspass.errors import InputError, ToolFailed
from lfspass.fsutil import require_tool
from lfspass.lab.initramfs import LAB_ADVICE
from lfspass.vm.disk_tools import C_LOCALE, make_esp, require_grub_efi, run_tool, tool_bytes

GRUBENV = "boot/grub/grubenv"
ESP_KIB = 16384
GRUB_MODULES = "part_gpt part_msdos ext2 search_fs_uuid serial terminal configfile linux loadenv test echo"


def embedded_config(fs_uuid: str) -> str:
    """What GRUB runs first: serial console, find /boot by UUID, then the root's own grub.cfg."""
    return (f"serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
            f"search --no-floppy --set=root --fs-uuid {fs_uuid}\nset prefix=($root)/boot/grub\n"
            "configfile $prefix/grub.cfg\n")


def grub_esp(dest: Path, fs_uuid: str) -> Path:
    """An ESP image with GRUB as EFI/BOOT/BOOTX64.EFI (kept; remade when the UUID changes)."""
    stamp = dest.with_suffix(".uuid")
    if dest.is_file() and stamp.is_file() and stamp.read_text() == fs_uuid:
        return dest
    mkstandalone = require_tool("grub-mkstandalone", "grub-efi-amd64-bin")
    require_grub_efi()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ensure_room(dest.parent, ESP_KIB << 10, f"lab: the ESP image {dest}", InputError, LAB_ADVICE)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cfg, efi, img = Path(tmp, "embedded.cfg"), Path(tmp, "BOOTX64.EFI"), Path(tmp, "esp.img")
        cfg.write_text(embedded_config(fs_uuid))
        # A standalone image: the embedded config and the modules travel inside the EFI binary.
        run_tool([mkstandalone, "-O", "x86_64-efi", "-o", str(efi), f"--modules={GRUB_MODULES}",
                  f"boot/grub/grub.cfg={cfg}"], "grub-mkstandalone")
        make_esp(img, efi, ESP_KIB, [])
        os.replace(img, dest)
    stamp.write_text(fs_uuid)
    return dest


def boot_listing(root: Path) -> str:
    """What is in the root's /boot besides grubenv (the image is remade when this changes)."""
    listing = journal.tree_listing(root / "boot") if (root / "boot").is_dir() else {}
    listing.pop("grub/grubenv", None)
    return json.dumps(listing, sort_keys=True)


def make_disk(root: Path, dest: Path, fs_uuid: str) -> Path:
    """An ext2 image holding the root's /boot (as /boot), with the recipe's filesystem UUID."""
    if not fs_uuid:
        raise InputError("[boot] fs_uuid is empty: GRUB finds /boot by it; set it in the lab recipe")
    mke2fs = require_tool("mke2fs", "e2fsprogs")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        journal.link_tree(root / "boot", Path(tmp, "tree", "boot"))
        size = sum(p.stat().st_size for p in Path(tmp, "tree").rglob("*") if p.is_file())
        mib = max(64, 2 * (size >> 20) + 16)
        ensure_room(dest.parent, mib << 20, f"lab: the /boot image {dest}", InputError, LAB_ADVICE)
        img = Path(tmp, "boot.ext2")
        run_tool([mke2fs, "-q", "-F", "-t", "ext2", "-U", fs_uuid, "-d", str(Path(tmp, "tree")), str(img), f"{mib}M"],
                 "mke2fs")
        os.replace(img, dest)
    dest.with_suffix(".listing").write_text(boot_listing(root))
    return dest


def read_image_env(img: Path) -> bytes:
    debugfs = require_tool("debugfs", "e2fsprogs")
    return tool_bytes([debugfs, "-R", f"cat /{GRUBENV}", str(img)], "debugfs cat grubenv", C_LOCALE)


def block_size(dumpe2fs_head: str) -> int:
    """The block size ``dumpe2fs -h`` prints (in the C locale); 0 when its output has no such line."""
    m = re.search(r"^Block size:\s+(\d+)", dumpe2fs_head, re.M)
    return int(m.group(1)) if m else 0


def write_image_env(img: Path, data: bytes) -> None:
    """Overwrite grubenv's block on the image in place, as GRUB's save_env does."""
    if len(data) != 1024:
        raise InputError(f"grubenv is {len(data)} bytes, not GRUB's 1024; recreate it with grub-editenv")
    debugfs = require_tool("debugfs", "e2fsprogs")
    out = run_tool([debugfs, "-R", f"bmap /{GRUBENV} 0", str(img)], "debugfs bmap", env=C_LOCALE).strip()
    head = run_tool([require_tool("dumpe2fs", "e2fsprogs"), "-h", str(img)], "dumpe2fs", env=C_LOCALE)
    bs = block_size(head)
    if not out.isdigit() or bs < 1024:
        raise ToolFailed(f"{img}: cannot find grubenv's block (debugfs bmap: {out!r}, dumpe2fs block size: "
                         f"{bs or 'none printed'})")
    with open(img, "r+b") as fh:
        fh.seek(int(out) * bs)
        fh.write(data)


def sync_disk(root: Path, img: Path, fs_uuid: str) -> str:
    """Bring the image up to date before a boot: remade when /boot changed, else grubenv in place."""
    listing = img.with_suffix(".listing")
    if not img.is_file() or not listing.is_file() or listing.read_text() != boot_listing(root):
        make_disk(root, img, fs_uuid)
        return "remade"
    env = root / GRUBENV
    if env.is_file() and read_image_env(img) != env.read_bytes():
        write_image_env(img, env.read_bytes())
        return "grubenv written"
    return "unchanged"


def read_back_env(root: Path, img: Path) -> bytes:
    """Copy the grubenv GRUB left on the image into the root (journaled: lfspass writes it there)."""
    data = read_image_env(img)
    if data:
        journal.write_atomic(root, root / GRUBENV, data)
    return data
