"""The image guest's disk: a GPT raw file with an ESP (GRUB) and an ext4 root made from a folder, then qcow2."""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import ToolFailed, VmError
from lfspass.fsutil import require_tool
from lfspass.vm.disk_tools import C_LOCALE, make_esp, require_grub_efi, run_tool

SECTOR = 512
ESP_MIB = 64
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-9679-CDCB5E0EA0D6"   # Discoverable Partitions: Linux root (x86-64)
# Fixed per VM name: two builds of one VM get the same identifiers, two VMs different ones.
NAMESPACE = uuid.UUID("7d0c4e0e-5a2b-4f4e-9a51-6c6673706173")
GRUB_MODULES = ["part_gpt", "fat", "ext2", "search", "search_fs_uuid", "normal", "linux", "configfile", "echo", "test",
                "serial", "terminal", "gzio", "efi_gop", "all_video", "sleep"]


@dataclass(frozen=True)
class Ids:
    """Every identifier that would otherwise be random: GPT GUIDs, ext4 UUID and hash seed, FAT volume id."""

    disk: str
    esp_part: str
    root_part: str
    root_fs: str
    hash_seed: str
    esp_volid: str

    @classmethod
    def for_vm(cls, name: str) -> Ids:
        u = {k: str(uuid.uuid5(NAMESPACE, f"{name}/{k}")) for k in ("disk", "esp", "root", "fs", "seed")}
        return cls(u["disk"], u["esp"], u["root"], u["fs"], u["seed"], u["fs"].replace("-", "")[:8].upper())


def layout(size: int) -> tuple[int, int, int, int]:
    """(esp_start, esp_sectors, root_start, root_sectors) on a disk of ``size`` bytes, 1 MiB aligned."""
    esp_start, esp_len = 2048, ESP_MIB << 11
    root_start = esp_start + esp_len
    # The backup GPT takes the last 33 sectors; round the root down to whole MiB.
    root_len = ((size // SECTOR - 34 - root_start) // 2048) * 2048
    if root_len < 2048 * 64:
        raise VmError(f"disk size {size >> 20} MiB is too small for an image guest: give at least 512M")
    return esp_start, esp_len, root_start, root_len


def grub_image(out: Path, root_fs: str, log) -> None:
    """A standalone GRUB EFI binary that finds the root filesystem by UUID and reads its /boot/grub/grub.cfg."""
    tool = require_tool("grub-mkimage", "grub-efi-amd64-bin")
    require_grub_efi()
    embedded = out.with_name("grub-embedded.cfg")
    embedded.write_text(f"search --no-floppy --fs-uuid --set=root {root_fs}\nset prefix=($root)/boot/grub\n")
    run_tool([tool, "-O", "x86_64-efi", "-p", "/boot/grub", "-c", str(embedded), "-o", str(out), *GRUB_MODULES],
             "grub-mkimage", log)


def guest_esp(out: Path, efi: Path, ids: Ids, epoch: int, log) -> None:
    """FAT32 ESP holding EFI/BOOT/BOOTX64.EFI: fixed volume id, and no clock in it (--invariant, mtools' epoch)."""
    make_esp(out, efi, ESP_MIB << 10, ["--invariant", "-F", "32", "-S", "512", "-s", "1", "-i", ids.esp_volid,
                                      "-n", "EFI"], log, {"SOURCE_DATE_EPOCH": str(epoch)})


def used_inodes(img: Path, log) -> list[int]:
    """Inode numbers in use, read from dumpe2fs's per-group free-inode ranges (its C-locale labels)."""
    text = run_tool([require_tool("dumpe2fs", "e2fsprogs"), str(img)], "dumpe2fs", log, C_LOCALE)
    head = re.search(r"^Inodes per group:\s+(\d+)", text, re.M)
    if head is None:
        raise ToolFailed(f"dumpe2fs printed no 'Inodes per group' line for {img}; full log: {log.name}")
    per_group = int(head.group(1))
    used: list[int] = []
    for m in re.finditer(r"^Group (\d+):.*?^\s+Free inodes: ?([0-9, -]*)$", text, re.M | re.S):
        first = int(m.group(1)) * per_group + 1
        free: set[int] = set()
        for part in filter(None, (p.strip() for p in m.group(2).split(","))):
            lo, _, hi = part.partition("-")
            free.update(range(int(lo), int(hi or lo) + 1))
        used += [n for n in range(first, first + per_group) if n not in free]
    return used


def make_root_fs(tree: Path, out: Path, sectors: int, ids: Ids, epoch: int, log) -> int:
    """ext4 from ``tree`` (mke2fs -d) with fixed UUID, hash seed and clock; returns the inodes fixed after.

    mke2fs 1.47.0 copies each source file's ctime and atime (the extraction time;
    docs/explanation/image-reproducibility.md#mke2fs-copies-ctime-and-atime),
    and a process cannot set ctime; so every used inode gets both set to ``epoch`` with debugfs.
    """
    mke2fs = require_tool("mke2fs", "e2fsprogs")
    out.unlink(missing_ok=True)
    env = {"E2FSPROGS_FAKE_TIME": str(epoch)}
    run_tool(["nice", "-n", "10", mke2fs, "-q", "-F", "-t", "ext4", "-L", "root", "-U", ids.root_fs,
         "-E", f"hash_seed={ids.hash_seed},root_owner=0:0,lazy_itable_init=1", "-d", str(tree), str(out),
              f"{sectors // 2}k"], "mke2fs", log, env, "; a bigger disk.size makes room")
    script = out.with_name("fix-times.debugfs")
    inodes = [n for n in used_inodes(out, log) if n == 2 or n > 10]
    with open(script, "w") as fh:
        for n in inodes:
            fh.write(f"sif <{n}> ctime @{epoch}\nsif <{n}> atime @{epoch}\n")
    run_tool([require_tool("debugfs", "e2fsprogs"), "-w", "-f", str(script), str(out)], "debugfs (fix times)", log, env)
    return len(inodes)


def copy_into(src: Path, dst, offset: int) -> None:
    """Copy ``src``'s data extents into the open file ``dst`` at ``offset`` (holes stay holes)."""
    with open(src, "rb") as fh:
        end = os.fstat(fh.fileno()).st_size
        pos = 0
        while pos < end:
            try:
                pos = os.lseek(fh.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fh.fileno(), pos, os.SEEK_HOLE)
            fh.seek(pos)
            while pos < hole:
                chunk = fh.read(min(8 << 20, hole - pos))
                os.pwrite(dst.fileno(), chunk, offset + pos)
                pos += len(chunk)


def assemble(raw: Path, size: int, esp: Path, root: Path, ids: Ids, log) -> None:
    """GPT with fixed GUIDs on a plain file (sfdisk), both partitions copied into place."""
    esp_start, esp_len, root_start, root_len = layout(size)
    raw.unlink(missing_ok=True)
    with open(raw, "wb") as fh:
        fh.truncate(size)
    script = (f"label: gpt\nlabel-id: {ids.disk}\nunit: sectors\nfirst-lba: 2048\n"
              f"start={esp_start}, size={esp_len}, type={ESP_TYPE}, uuid={ids.esp_part}, name=\"EFI\"\n"
              f"start={root_start}, size={root_len}, type={ROOT_TYPE}, uuid={ids.root_part}, name=\"root\"\n")
    log.write(script)
    sfdisk = require_tool("sfdisk", "fdisk")
    log.write(f"$ {sfdisk} --no-reread --no-tell-kernel {raw}\n")
    proc = subprocess.run([sfdisk, "--no-reread", "--no-tell-kernel", "-q", str(raw)], input=script, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log.write(proc.stdout)
    if proc.returncode != 0:
        raise ToolFailed(f"sfdisk failed: {proc.stdout.strip()[-200:]}; full log: {log.name}")
    with open(raw, "r+b") as fh:
        copy_into(esp, fh, esp_start * SECTOR)
        copy_into(root, fh, root_start * SECTOR)
        os.fsync(fh.fileno())


def qcow2_size(raw: Path, log) -> int:
    """Bytes ``qemu-img convert`` will write for ``raw`` as qcow2 (``qemu-img measure``)."""
    out = run_tool([require_tool("qemu-img", "qemu-utils"), "measure", "--output=json", "-f", "raw", "-O", "qcow2",
                    str(raw)], "qemu-img measure", log)
    return int(json.loads(out)["required"])


def to_qcow2(raw: Path, out: Path, log) -> None:
    run_tool([require_tool("qemu-img", "qemu-utils"), "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
             "qemu-img convert", log)
