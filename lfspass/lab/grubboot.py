"""Boot the lab through real GRUB (FIELD-NOTES §9): GRUB's EFI image on an ESP, the root's /boot
as an ext2 image with the recipe's filesystem UUID (made without root: ``mke2fs -d``), OVMF
firmware; after each boot the grubenv GRUB saved on the image is read back into the root."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lfspass import journal
from lfspass.diskspace import ensure_room
from lfspass.errors import LfspassError
from lfspass.fsutil import require_tool

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GRUBENV = "boot/grub/grubenv"
ESP_KIB = 16384
ADVICE = "free space or set [lab] dir on another filesystem"


def _run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, **kw)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        raise LfspassError(f"{what} failed ({' '.join(map(str, argv[:3]))} …): {' '.join(err.split())[-300:]}")
    return proc


def embedded_config(fs_uuid: str) -> str:
    """What GRUB runs first: serial console, find /boot by UUID, then the root's own grub.cfg."""
    return (f"serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
            f"search --no-floppy --set=root --fs-uuid {fs_uuid}\nset prefix=($root)/boot/grub\n"
            "configfile $prefix/grub.cfg\n")


def make_esp(dest: Path, fs_uuid: str) -> Path:
    """An ESP image with GRUB as EFI/BOOT/BOOTX64.EFI (kept; remade when the UUID changes)."""
    stamp = dest.with_suffix(".uuid")
    if dest.is_file() and stamp.is_file() and stamp.read_text() == fs_uuid:
        return dest
    mkstandalone = require_tool("grub-mkstandalone", "grub-efi-amd64-bin")
    if not Path("/usr/lib/grub/x86_64-efi").is_dir():
        raise LfspassError("GRUB's x86_64-efi modules are missing: apt-get install grub-efi-amd64-bin")
    mkfs, mmd, mcopy = (require_tool("mkfs.vfat", "dosfstools"), require_tool("mmd", "mtools"),
                        require_tool("mcopy", "mtools"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    ensure_room(dest.parent, ESP_KIB << 10, f"lab: the ESP image {dest}", advice=ADVICE)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cfg, efi, img = Path(tmp, "embedded.cfg"), Path(tmp, "BOOTX64.EFI"), Path(tmp, "esp.img")
        cfg.write_text(embedded_config(fs_uuid))
        _run([mkstandalone, "-O", "x86_64-efi", "-o", str(efi), "--modules=part_gpt part_msdos ext2 search_fs_uuid "
              "serial terminal configfile linux loadenv test echo", f"boot/grub/grub.cfg={cfg}"], "grub-mkstandalone")
        _run([mkfs, "-C", str(img), str(ESP_KIB)], "mkfs.vfat")
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        _run([mmd, "-i", str(img), "::/EFI", "::/EFI/BOOT"], "mmd", env=env)
        _run([mcopy, "-i", str(img), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], "mcopy", env=env)
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
        raise LfspassError("[boot] fs_uuid is empty: GRUB finds /boot by it; set it in the lab recipe")
    mke2fs = require_tool("mke2fs", "e2fsprogs")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        journal.link_tree(root / "boot", Path(tmp, "tree", "boot"))
        size = sum(p.stat().st_size for p in Path(tmp, "tree").rglob("*") if p.is_file())
        mib = max(64, 2 * (size >> 20) + 16)
        ensure_room(dest.parent, mib << 20, f"lab: the /boot image {dest}", advice=ADVICE)
        img = Path(tmp, "boot.ext2")
        _run([mke2fs, "-q", "-F", "-t", "ext2", "-U", fs_uuid, "-d", str(Path(tmp, "tree")), str(img), f"{mib}M"],
             "mke2fs")
        os.replace(img, dest)
    dest.with_suffix(".listing").write_text(boot_listing(root))
    return dest


def read_image_env(img: Path) -> bytes:
    debugfs = require_tool("debugfs", "e2fsprogs")
    return _run([debugfs, "-R", f"cat /{GRUBENV}", str(img)], "debugfs cat grubenv").stdout


def block_size(dumpe2fs_head: str) -> int:
    """The block size ``dumpe2fs -h`` prints; 0 when its output has no such line."""
    m = re.search(r"^Block size:\s+(\d+)", dumpe2fs_head, re.M)
    return int(m.group(1)) if m else 0


def write_image_env(img: Path, data: bytes) -> None:
    """Overwrite grubenv's block on the image in place, as GRUB's save_env does."""
    if len(data) != 1024:
        raise LfspassError(f"grubenv is {len(data)} bytes, not GRUB's 1024; recreate it with grub-editenv")
    debugfs = require_tool("debugfs", "e2fsprogs")
    out = _run([debugfs, "-R", f"bmap /{GRUBENV} 0", str(img)], "debugfs bmap", text=True).stdout.strip()
    head = _run([require_tool("dumpe2fs", "e2fsprogs"), "-h", str(img)], "dumpe2fs", text=True).stdout
    bs = block_size(head)
    if not out.isdigit() or bs < 1024:
        raise LfspassError(f"{img}: cannot find grubenv's block (debugfs bmap: {out!r}, dumpe2fs block size: {bs or 'none printed'})")
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


def grub_argv(esp: Path, disk: Path, vars_fd: Path, console_log: Path, host_out: Path, iommu: bool = True,
              memory: str = "256M", accel: str = "tcg") -> list[str]:
    """QEMU under OVMF (CODE read-only, a VARS copy), ESP and /boot image as virtio disks."""
    if not OVMF_CODE.is_file():
        raise LfspassError(f"{OVMF_CODE} missing: apt-get install ovmf")
    argv = [require_tool("qemu-system-x86_64", "qemu-system-x86"),
            "-machine", "q35,kernel-irqchip=split", "-accel", accel, "-m", memory,
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{console_log}", "-serial", f"file:{host_out}",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={vars_fd}"]
    if iommu:
        argv += ["-device", "intel-iommu,intremap=on"]
    argv += ["-device", "edu",
             "-drive", f"file={esp},format=raw,if=virtio,readonly=on",
             "-drive", f"file={disk},format=raw,if=virtio"]
    return argv


def fresh_vars(dest: Path) -> Path:
    shutil.copyfile(OVMF_VARS, dest)
    return dest


def kernel_cmdline(console_log: Path) -> str | None:
    """The command line the booted kernel printed (GRUB puts BOOT_IMAGE= first)."""
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"Command line: (.*)", text)
    return m.group(1).strip() if m else None


def read_env_text(data: bytes) -> dict[str, str]:
    return dict(l.split("=", 1) for l in data.decode(errors="replace").splitlines() if "=" in l and not l.startswith("#"))


def boot_until_saved(argv: list[str], console_log: Path, host_out: Path, timeout: int, end_mark: str) -> float:
    """Run QEMU until it exits, or until the guest has sent its host state and stopped.

    A kernel that cannot power the machine off (no ACPI from the firmware) halts instead;
    the run is over once the host state is complete and the console says so.
    """
    import time

    for path in (console_log, host_out):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        while proc.poll() is None:
            if time.monotonic() - start > timeout:
                raise LfspassError(f"lab guest still running after {timeout} s, killed (full log: {console_log}); "
                                   "raise [lab] timeout if the machine is slow")
            try:
                sent = end_mark in host_out.read_text(errors="replace")
                halted = re.search(r"reboot: (System halted|Power down)", console_log.read_text(errors="replace"))
            except OSError:
                sent, halted = False, None
            if sent and halted:
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    if proc.returncode not in (0, -9) and not (sent and halted):
        raise LfspassError(f"QEMU exited with status {proc.returncode}: {' '.join(out.decode(errors='replace').split())[-300:]}")
    return time.monotonic() - start
