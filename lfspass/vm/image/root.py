"""The image guest's root folder: hostname, fstab by UUID, first user, SSH keys at first boot, GRUB menu, marker unit."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from lfspass.errors import VmError
from lfspass.fsutil import require_tool, sha256_file, walk_tree
from lfspass.vm.disk_tools import run_tool
from lfspass.vm.image import guest_check
from lfspass.vm.image.disk import Ids

MARKER = "lfspass-first-boot: reached multi-user.target"
FIRSTBOOT_UNIT = "lfspass-first-boot.service"
HOSTKEYS_UNIT = "lfspass-ssh-host-keys.service"
# Files that hold the build's clock or randomness and that the guest remakes itself.
VOLATILE = ["var/cache/ldconfig/aux-cache", "var/lib/dbus/machine-id", "var/lib/systemd/random-seed",
            "var/log/dpkg.log", "var/log/alternatives.log", "var/log/apt/history.log", "var/log/apt/term.log",
            "var/log/apt/eipp.log.xz", "var/cache/debconf/config.dat-old", "var/cache/debconf/templates.dat-old",
            "var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old", "var/lib/dpkg/statoverride-old"]

UNITS = {
    FIRSTBOOT_UNIT: f"""\
# Written by lfspass: says on the serial line that the guest reached its default target.
# It runs until a boot that keeps its disk has run it once (lfspass's own check boots on a
# throwaway overlay, so the guest's first real boot says it again).
[Unit]
Description=lfspass first-boot marker on the serial console
After=multi-user.target {guest_check.UNIT}
ConditionPathExists=!/var/lib/lfspass/first-boot-done

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "{MARKER}, kernel $(uname -r)" > /dev/ttyS0'
ExecStartPost=/bin/sh -c 'mkdir -p /var/lib/lfspass && touch /var/lib/lfspass/first-boot-done'

[Install]
WantedBy=multi-user.target
""",
    guest_check.UNIT: guest_check.UNIT_TEXT,
    HOSTKEYS_UNIT: """\
# Written by lfspass: the image carries no SSH host keys (every guest needs its own),
# so they are made at the first boot, before sshd starts.
[Unit]
Description=Generate SSH host keys at first boot
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target ssh.service
""",
}
NETWORK = "# Written by lfspass: DHCP on the first Ethernet link (QEMU user networking).\n[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"


def hostname_for(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63] or "debian"


def grub_cfg(ids: Ids) -> str:
    # /vmlinuz and /initrd.img are the links Debian's kernel packages keep current, so a kernel
    # upgrade inside the guest still boots without GRUB being installed there.
    return f"""\
# Written by lfspass (image guest); GRUB finds this filesystem by UUID {ids.root_fs}.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
menuentry "Debian GNU/Linux (lfspass image)" {{
    search --no-floppy --fs-uuid --set=root {ids.root_fs}
    linux /vmlinuz root=UUID={ids.root_fs} ro console=tty0 console=ttyS0,115200n8
    initrd /initrd.img
}}
"""


def _write(tree: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = tree / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def customize(tree: Path, *, name: str, user: str, ssh_key: str, password_hash: str, ids: Ids, log) -> None:
    """Make the mmdebstrap tree a bootable, reachable guest (runs as root on the folder)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise VmError(f"installer.user = {user!r}: use a lower-case login such as debian")
    if any(c in ssh_key + password_hash for c in "'\n\\") or ":" in password_hash:
        raise VmError("installer: ssh_key and password_hash must be one line without quotes or backslashes")
    host = hostname_for(name)
    _write(tree, "etc/hostname", host + "\n")
    _write(tree, "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    esp = f"{ids.esp_volid[:4]}-{ids.esp_volid[4:]}"
    _write(tree, "etc/fstab", f"# Written by lfspass: filesystems by UUID.\nUUID={ids.root_fs} / ext4 errors=remount-ro 0 1\n"
                              f"UUID={esp} /boot/efi vfat umask=0077,nofail 0 2\n")
    (tree / "boot/efi").mkdir(parents=True, exist_ok=True)
    _write(tree, "boot/grub/grub.cfg", grub_cfg(ids))
    for key in tree.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    for unit, text in UNITS.items():
        _write(tree, f"etc/systemd/system/{unit}", text)
    _write(tree, guest_check.SCRIPT_PATH, guest_check.SCRIPT, 0o755)
    _write(tree, "etc/systemd/network/80-lfspass-dhcp.network", NETWORK)
    for rel in VOLATILE:
        (tree / rel).unlink(missing_ok=True)
    # apt hands its partial folders to _apt only when _apt can reach the build folder (mmdebstrap
    # checks): a build inside a 0700 VM folder would leave them root's. Give them as apt would.
    apt = next((f for f in (l.split(":") for l in (tree / "etc/passwd").read_text().splitlines()) if f[0] == "_apt"), None)
    for rel in ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial"):
        if apt and (tree / rel).is_dir():
            os.chown(tree / rel, int(apt[2]), 0)
            os.chmod(tree / rel, 0o700)
    chroot = require_tool("chroot", "coreutils")
    run_tool([chroot, str(tree), "systemctl", "enable", FIRSTBOOT_UNIT, guest_check.UNIT, HOSTKEYS_UNIT, "systemd-networkd.service"],
             "systemctl enable (in the image)", log)
    run_tool([chroot, str(tree), "useradd", "--create-home", "--shell", "/bin/bash", "--user-group",
              "--password", password_hash or "!", user], f"useradd {user} (in the image)", log)
    if ssh_key:
        home = tree / "home" / user
        ids_line = (tree / "etc/passwd").read_text().splitlines()
        uid, gid = next((int(f[2]), int(f[3])) for f in (l.split(":") for l in ids_line) if f[0] == user)
        _write(tree, f"home/{user}/.ssh/authorized_keys", ssh_key.strip() + "\n", 0o600)
        os.chmod(home / ".ssh", 0o700)
        for p in (home / ".ssh", home / ".ssh/authorized_keys"):
            os.chown(p, uid, gid)


def clamp_times(tree: Path, epoch: int) -> None:
    """No mtime later than ``epoch`` (what tar --clamp-mtime does): files made while building get it."""
    for entry in [tree, *(p for p, _ in walk_tree(tree))]:
        st = os.lstat(entry)
        if st.st_mtime > epoch:
            os.utime(entry, (epoch, epoch), follow_symlinks=False)


def listing(tree: Path) -> str:
    """One line per path: mode, owner, size, mtime, link target or content sha256, path (diff two builds)."""
    lines = []
    for path in sorted([tree, *(p for p, _ in walk_tree(tree))]):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            what = "-> " + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            what = sha256_file(path)
        else:
            what = "-"
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        lines.append(f"{st.st_mode:o} {st.st_uid}:{st.st_gid} {size} {int(st.st_mtime)} /{path.relative_to(tree)} {what}")
    return "\n".join(lines) + "\n"


def remove_tree(tree: Path) -> None:
    """Delete a build folder, but first unmount what a killed mmdebstrap may have left mounted in it
    (/proc, /sys, /dev/pts): removing files through such a mount would reach the host's own."""
    base = str(tree.resolve()) + "/"
    try:
        mounts = [l.split()[4].replace("\\040", " ") for l in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        mounts = []
    inside = sorted((m for m in mounts if m.startswith(base)), key=len, reverse=True)
    for m in inside:
        subprocess.run(["umount", "-l", m], capture_output=True)
    if any(l.split()[4].startswith(base) for l in Path("/proc/self/mountinfo").read_text().splitlines()):
        return  # still mounted: leave the folder rather than delete through a mount
    shutil.rmtree(tree, ignore_errors=True)
