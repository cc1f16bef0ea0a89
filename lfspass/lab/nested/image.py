"""The nested lab's image: L1's initramfs, the lab initramfs plus Debian's QEMU, the VM folder and L2's boot files."""
from __future__ import annotations

import gzip
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

from lfspass.diskspace import ensure_room
from lfspass.errors import InputError, ToolFailed
from lfspass.fsutil import require_tool, write_atomic
from lfspass.lab.initramfs import BOOT_FILES, LAB_ADVICE, Archive, Entry, busybox_applets, lab_archive, source_date_epoch
from lfspass.render import TEMPLATES
from lfspass.vm.image import guest_check

QEMU = Path("/usr/bin/qemu-system-x86_64")  # Debian's; it finds modules and firmware relative to /usr/bin
TCG_MODULE = Path("/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so")
# What QEMU reads from its data folders for a q35 guest with -kernel and no display:
# SeaBIOS (QEMU's default BIOS), the option ROM that loads -kernel through fw_cfg, and
# the TPR-patching ROM every x86 machine loads (missing, it is only a warning, but a loud one).
DATA_FILES = (Path("/usr/share/seabios/bios-256k.bin"), Path("/usr/share/qemu/linuxboot_dma.bin"),
              Path("/usr/share/qemu/kvmvapic.bin"))
NESTED_SCRIPT = TEMPLATES / "lab-nested.sh"
L2_INIT = TEMPLATES / "lab-l2-init.sh"
L2_APPEND = "console=ttyS0 panic=-1"
RUN_CONF = "nested/run.conf"
L2_KERNEL = "nested/l2/vmlinuz"
L2_INITRD = "nested/l2/initrd.cpio.gz"


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries ``ldd`` names for ``binary`` (the dynamic loader included), as the loader looks them up."""
    ldd = require_tool("ldd", "libc-bin")
    # The C locale: the lines are read below, and ldd's own messages are translated in others.
    proc = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        raise ToolFailed(f"ldd {binary} failed: {proc.stderr.strip() or proc.stdout.strip()}; "
                           "is it a dynamically linked program? (apt-get install qemu-system-x86)")
    out = []
    for line in proc.stdout.splitlines():
        # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            out.append(Path(m.group(1)))
        elif "not found" in line:
            raise ToolFailed(f"ldd {binary}: {line.strip()}; reinstall qemu-system-x86")
    return sorted(set(out))


def qemu_files(firmware: list[Path]) -> list[Path]:
    """Every host file QEMU needs inside L1: binary, libraries, TCG module, firmware (by the paths QEMU opens)."""
    for path in (QEMU, TCG_MODULE, *DATA_FILES):
        if not path.exists():
            raise ToolFailed(f"{path} not found: the nested lab runs Debian's QEMU inside the lab guest; "
                               "apt-get install qemu-system-x86 seabios")
    files = {QEMU, TCG_MODULE, *DATA_FILES, *firmware}
    for binary in (QEMU, TCG_MODULE):
        files.update(shared_libraries(binary))
    return sorted(files)


def l2_archive(busybox: Path) -> Archive:
    """L2's initramfs: busybox, an /init that lists PCI devices and drivers on the console, and the
    guest-side check image guests carry (the same report, in its own lines)."""
    arc = Archive()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/sbin", "var/lib", "dev", "proc", "sys"):
        arc.add_dir(d)
    arc.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        if applet != "bin/busybox":
            arc.add_symlink(applet, "../" * applet.count("/") + "bin/busybox")
    arc.add(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))  # the kernel opens it before /init
    arc.add_file("init", L2_INIT.read_bytes(), 0o755)
    arc.add_file(guest_check.SCRIPT_PATH, guest_check.SCRIPT.encode(), 0o755)
    return arc


def run_conf(launcher: Path) -> str:
    """What /nested.sh reads: the launcher to run and what it appends for L2."""
    values = {"LAUNCHER": str(launcher), "L2_KERNEL": "/" + L2_KERNEL, "L2_INITRD": "/" + L2_INITRD,
              "L2_APPEND": L2_APPEND}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def l1_archive(root: Path, release: str, vmlinuz: Path, vm_dir: Path, launcher: Path, firmware: list[Path],
               vfio_files: bool = True, busybox: Path = Path("/bin/busybox")) -> Archive:
    """The lab initramfs (modules, vfio files, /init) + QEMU + the VM folder at its host path + L2's files."""
    arc = lab_archive(root, release, busybox)
    if not vfio_files:
        # The negative case: the device stays on its default driver, as if `doit vfio` never ran.
        for name in list(arc.entries):
            if any(name == rel or name.startswith(rel + "/") for rel in BOOT_FILES):
                del arc.entries[name]
    for path in qemu_files(firmware):
        # A regular file at the path QEMU (or the loader) opens it by: links resolved here.
        arc.add_file(str(path).lstrip("/"), path.read_bytes(), os.stat(path).st_mode & 0o755 | 0o644)
    if not launcher.is_file():
        raise InputError(f"{launcher} not found: run `doit vm` first (the nested lab runs that launcher)")
    arc.add_tree(vm_dir, str(vm_dir).lstrip("/"))
    arc.add_file(L2_KERNEL, vmlinuz.read_bytes())
    arc.add_file(L2_INITRD, gzip.compress(l2_archive(busybox).newc(source_date_epoch()), compresslevel=6, mtime=0))
    arc.add_file(RUN_CONF, run_conf(launcher).encode())
    arc.add_file("nested.sh", NESTED_SCRIPT.read_bytes(), 0o755)
    return arc


def build_l1_image(out: Path, **kwargs) -> bool:
    """Write L1's gzip'd initramfs to ``out`` (atomically, only if its bytes change); True when changed."""
    data = l1_archive(**kwargs).newc(source_date_epoch())
    # Level 1: the image is mostly QEMU's libraries; the guest unpacks it under TCG.
    blob = gzip.compress(data, compresslevel=1, mtime=0)
    ensure_room(out.parent, len(blob), f"lab: the nested initramfs {out}", InputError, LAB_ADVICE)
    return write_atomic(out, blob)
