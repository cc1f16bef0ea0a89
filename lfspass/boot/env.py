"""GRUB's environment block (``boot/grub/grubenv`` under the root), written with grub-editenv and
journaled; the check that GRUB can write it back at boot (not on btrfs, LVM, RAID or LUKS)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lfspass import journal
from lfspass.errors import ToolFailed
from lfspass.fsutil import require_tool
from lfspass.recipe import Recipe


def env_path(recipe: Recipe) -> Path:
    """grubenv sits beside grub.cfg, where ``$prefix/grubenv`` finds it."""
    return (recipe.root / recipe.boot.grub_cfg).parent / "grubenv"


def parse_env(data: str | bytes) -> dict[str, str]:
    """The variables of a grubenv block's text (``#`` lines are its comment and padding)."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def read_env(path: Path) -> dict[str, str]:
    """The variables of a grubenv file (empty when it is absent)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    return parse_env(text)


def _editenv(path: Path, *args: str) -> None:
    tool = require_tool("grub-editenv", "grub-common")
    proc = subprocess.run([tool, str(path), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolFailed(f"grub-editenv {path} {' '.join(args)} failed: {' '.join(proc.stderr.split())}")


def ensure_env(recipe: Recipe) -> bool:
    """Create an empty grubenv (1024 bytes, GRUB's own format) when there is none."""
    path = env_path(recipe)
    if path.is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with journal.editing(recipe.root, path):
        _editenv(path, "create")
    return True


def set_env(recipe: Recipe, **values: str | None) -> dict[str, str]:
    """Set (or, for None, unset) variables; journaled.  Returns the new environment."""
    path = env_path(recipe)
    ensure_env(recipe)
    sets = [f"{k}={v}" for k, v in values.items() if v is not None]
    unsets = [k for k, v in values.items() if v is None]
    with journal.editing(recipe.root, path):
        if sets:
            _editenv(path, "set", *sets)
        if unsets:
            _editenv(path, "unset", *unsets)
    return read_env(path)


# -- can GRUB write the env block there? -------------------------------------------------
def _mount_of(path: Path, mountinfo: str) -> tuple[str, str]:
    """(filesystem type, source device) of the mount holding ``path``."""
    best, fstype, source = "", "", ""
    target = os.path.realpath(path)
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        mnt = fields[4].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype, source = mnt, rest[0], rest[1]
    return fstype, source


def env_unwritable(path: Path, mountinfo: str | None = None, sys_root: Path = Path("/")) -> str | None:
    """Why GRUB could not save its env block on the filesystem of ``path``, or None."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fstype, source = _mount_of(probe, mountinfo)
    if fstype in ("btrfs", "zfs"):
        return f"/boot is on {fstype}"
    dev = Path(source).name
    if source.startswith("/dev/md") or dev.startswith("md"):
        return f"/boot is on software RAID ({source})"
    if source.startswith("/dev/mapper/") or dev.startswith("dm-"):
        name = dev
        if source.startswith("/dev/mapper/"):
            try:
                name = Path(os.path.realpath(sys_root / source.lstrip("/"))).name
            except OSError:
                pass
        try:
            uuid = (sys_root / "sys/block" / name / "dm/uuid").read_text().strip()
        except OSError:
            uuid = ""
        kind = "LUKS" if uuid.startswith("CRYPT-") else "LVM" if uuid.startswith("LVM-") else "device-mapper (LVM or LUKS)"
        return f"/boot is on {kind} ({source})"
    return None
