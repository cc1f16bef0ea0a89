"""A deterministic busybox initramfs (gzip'd newc cpio) for booting an installed kernel in the lab."""
from __future__ import annotations

import gzip
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lfspass.diskspace import ensure_room
from lfspass.errors import InputError, ToolFailed
from lfspass.fsutil import write_atomic
from lfspass.render import TEMPLATES

INIT_SCRIPT = TEMPLATES / "lab-init.sh"
BUSYBOX = Path("/bin/busybox")
# Files lfspass generates below the install root that an LFS boot reads before udev.
BOOT_FILES = ("etc/modprobe.d", "etc/sysconfig/modules", "etc/modules-load.d")
LAB_ADVICE = "free space or set [lab] dir on another filesystem"
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root")


@dataclass(frozen=True)
class Entry:
    """One cpio member; ``data`` is the file content or the symlink target."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


class Archive:
    """Members by path; parents are added as folders, output is sorted by name."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.entries.setdefault("/".join(parts[:i]), Entry("/".join(parts[:i]), stat.S_IFDIR | 0o755))

    def add(self, entry: Entry) -> None:
        name = entry.name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, entry.mode, entry.data, entry.rdev)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self.add(Entry(name, stat.S_IFDIR | mode))

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.add(Entry(name, stat.S_IFREG | mode, data))

    def add_symlink(self, name: str, target: str) -> None:
        self.add(Entry(name, stat.S_IFLNK | 0o777, target.encode()))

    def add_tree(self, src: Path, dest: str) -> None:
        """Copy a folder: files keep their permission bits; links leaving ``src`` are skipped."""
        for path in sorted(src.rglob("*")):
            rel = f"{dest}/{path.relative_to(src).as_posix()}"
            if path.is_symlink():
                target = os.readlink(path)
                # lib/modules/<rel>/{build,source} point into the build machine's tree.
                if not target.startswith("/") and (path.parent / target).resolve().is_relative_to(src.resolve()):
                    self.add_symlink(rel, target)
            elif path.is_dir():
                self.add_dir(rel)
            elif path.is_file():
                self.add_file(rel, path.read_bytes(), path.stat().st_mode & 0o755 | 0o644)

    def newc(self, mtime: int = 0) -> bytes:
        """The archive in the kernel's "newc" cpio format (usr/gen_init_cpio.c), uid/gid 0."""
        out = bytearray()
        for ino, name in enumerate(sorted(self.entries), start=1):
            e = self.entries[name]
            out += _member(name, e.mode, e.data, ino, 2 if stat.S_ISDIR(e.mode) else 1, mtime, e.rdev)
        out += _member("TRAILER!!!", 0, b"", 0, 1, 0, (0, 0))
        return bytes(out)


def _member(name: str, mode: int, data: bytes, ino: int, nlink: int, mtime: int, rdev: tuple[int, int]) -> bytes:
    raw = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + raw
    return head + _pad(len(head)) + data + _pad(len(data))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Applet paths (``bin/sh``, ``sbin/modprobe``) the busybox binary installs itself as."""
    proc = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ToolFailed(f"{busybox} --list-full failed; install busybox-static (apt-get install busybox-static)")
    return sorted(line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip())


def lab_archive(root: Path, release: str, busybox: Path = BUSYBOX) -> Archive:
    """The lab initramfs: busybox, the installed kernel's modules and config, lfspass's boot files, /init."""
    if not busybox.is_file():
        raise ToolFailed(f"{busybox} not found: install busybox-static (apt-get install busybox-static)")
    moddir = root / "lib" / "modules" / release
    if not moddir.is_dir():
        raise InputError(f"{moddir} not found: the kernel {release} is not installed below {root}; "
                           "run `doit kernel` first")
    arc = Archive()
    for d in DIRS:
        arc.add_dir(d)
    arc.add(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))  # the kernel opens it before /init
    arc.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        if applet != "bin/busybox":
            arc.add_symlink(applet, "../" * applet.count("/") + "bin/busybox")
    arc.add_tree(moddir, f"lib/modules/{release}")
    config = root / "boot" / f"config-{release}"
    if config.is_file():
        arc.add_file(f"boot/config-{release}", config.read_bytes())
    for rel in BOOT_FILES:
        src = root / rel
        if src.is_dir():
            arc.add_tree(src, rel)
        elif src.is_file():
            arc.add_file(rel, src.read_bytes())
    arc.add_file("init", INIT_SCRIPT.read_bytes(), 0o755)
    return arc


def source_date_epoch() -> int:
    """mtime for every member: $SOURCE_DATE_EPOCH (reproducible-builds.org) or 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not value.isdigit():
        raise InputError(f"SOURCE_DATE_EPOCH={value!r}: expected seconds since 1970 (digits only); unset it or fix it")
    return int(value)


def build_initramfs(root: Path, release: str, out: Path, busybox: Path = BUSYBOX) -> bool:
    """Write the gzip'd initramfs to ``out`` (atomically, only if its bytes change); True when changed."""
    data = lab_archive(Path(root), release, busybox).newc(source_date_epoch())
    # mtime=0 in the gzip header too, so the same inputs give the same bytes.
    blob = gzip.compress(data, compresslevel=6, mtime=0)
    ensure_room(Path(out).parent, len(blob), f"lab: the initramfs {out}", InputError, LAB_ADVICE)
    return write_atomic(out, blob)
