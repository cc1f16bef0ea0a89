"""``[[vms]] libvirt = true``: let libvirt's QEMU user enter the VM folder, and say where it cannot.

The model (docs/reference/safety.md): lfspass makes a VM folder 0700; for libvirt it becomes
0710 with the QEMU user's group (Debian: libvirt-qemu), so that user may enter it but not list
it, and nobody else may enter it.  The disk and VARS stay 0600 root: libvirt's DAC driver
(qemu.conf dynamic_ownership, on by default) hands them to the QEMU user while the guest runs
and gives them back when it stops.  A folder lfspass did not make that way is left as it is.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import subprocess
from pathlib import Path

from lfspass.errors import VmError

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_USER = DEFAULT_GROUP = "libvirt-qemu"   # Debian's libvirt-daemon-system


def qemu_identity() -> tuple[str, str]:
    """(user, group) libvirt runs QEMU as: qemu.conf's ``user =`` / ``group =``, else Debian's defaults."""
    found = {"user": DEFAULT_USER, "group": DEFAULT_GROUP}
    try:
        text = QEMU_CONF.read_text()
    except OSError:
        text = ""
    for m in re.finditer(r'^\s*(user|group)\s*=\s*"([^"]*)"', text, re.MULTILINE):
        found[m.group(1)] = m.group(2)
    return found["user"], found["group"]


def qemu_ids(where: str) -> tuple[str, int, int, list[int]]:
    """(user, uid, gid, groups) of libvirt's QEMU user; one error when the host has none."""
    user, group = qemu_identity()
    try:
        pw = pwd.getpwnam(user) if not user.startswith("+") else pwd.getpwuid(int(user[1:]))
        gid = grp.getgrnam(group).gr_gid if not group.startswith("+") else int(group[1:])
    except (KeyError, ValueError):
        raise VmError(f"{where} = true but this host has no user {user!r} or group {group!r} for libvirt's QEMU "
                      f"(from {QEMU_CONF} or Debian's default): apt-get install libvirt-daemon-system, or set "
                      f"{where} = false") from None
    return user, pw.pw_uid, gid, os.getgrouplist(pw.pw_name, pw.pw_gid)


def _blocked(path: Path, uid: int, gid: int, groups: list[int]) -> Path | None:
    """The first of ``path`` and its parents the QEMU user cannot enter (a child checks, ACLs included)."""
    folders = [*reversed(path.parents), path]
    # /bin/sh, not this Python: the QEMU user may not reach a virtual environment either.
    script = 'for p; do [ -x "$p" ] || { printf "%s\\n" "$p"; exit 0; }; done'
    try:
        proc = subprocess.run(["/bin/sh", "-c", script, "sh", *map(str, folders)], user=uid, group=gid,
                              extra_groups=groups, capture_output=True, text=True, timeout=30, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return None   # not root: cannot take the user's identity; libvirt's own error will say it
    out = proc.stdout.strip()
    return Path(out) if out else None


def _describe(path: Path) -> str:
    st = path.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{stat.S_IMODE(st.st_mode):04o} {owner}:{group}"


def grant(folder: Path, where: str) -> list[str]:
    """Open ``folder`` to libvirt's QEMU user when lfspass made it (0700, our own); lines to print.

    Returns what was done (one line) and a warning for any folder on the way that the user
    still cannot enter.
    """
    user, uid, gid, groups = qemu_ids(where)
    lines = []
    st = folder.stat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.geteuid() and mode == 0o700:
        os.chown(folder, -1, gid)
        os.chmod(folder, 0o710)
        lines.append(f"{folder}: 0710 {_describe(folder).split()[1]} ({where} = true: libvirt's QEMU user {user} "
                     "may enter it, not list it; the disk and VARS stay 0600)")
    blocked = _blocked(folder, uid, gid, groups)
    if blocked is not None:
        lines.append(f"warning: libvirt's QEMU user {user} cannot enter {blocked} ({_describe(blocked)}): "
                     f"`virsh start` fails with Permission denied; `setfacl -m u:{user}:x {blocked}` (or move "
                     f"[[vms]] dir) lets it through without showing the folder to others")
    return lines
