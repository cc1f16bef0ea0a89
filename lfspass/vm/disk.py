"""The VM's qcow2 disk: made once at the recipe's size, never overwritten, truncated or resized."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from lfspass.errors import VmError
from lfspass.fsutil import require_tool

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str, where: str, default_unit: str = "") -> int:
    """'64G', '512M', '1T', '4096' -> bytes (binary units, as qemu-img and QEMU -m read them)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise VmError(f"{where} = {text!r}: expected a size such as 512M, 64G or 1T")
    unit = m.group(2).upper() or default_unit
    return int(m.group(1)) * _UNITS[unit]


def human(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def virtual_size(path: Path) -> int:
    """The image's virtual size from ``qemu-img info --output=json``."""
    tool = require_tool("qemu-img", "qemu-utils")
    # -U: a running VM holds a write lock; reading the header is still safe.
    proc = subprocess.run([tool, "info", "-U", "--output=json", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise VmError(f"{path} is not a disk image qemu-img can read ({proc.stderr.strip()}); "
                      "move it away or point [vms.disk] path elsewhere")
    return int(json.loads(proc.stdout)["virtual-size"])


def ensure_disk(path: Path, size: str, where: str = "disk.size") -> bool:
    """Create ``path`` at ``size`` unless it exists; True when it was created now.

    An existing image is left byte-identical.  One of another size is an error that
    says how to grow it: lfspass never shrinks or recreates a disk holding a guest.
    """
    want = parse_size(size, where)
    if path.exists() or path.is_symlink():
        have = virtual_size(path)
        if have != want:
            hint = (f"grow it with `qemu-img resize {path} {human(want)}` (then grow the guest's partition)"
                    if want > have else "shrinking loses data: set the size back, or make a new image yourself")
            raise VmError(f"{path} holds {human(have)} but {where} asks for {size}; lfspass does not change "
                          f"existing disks: {hint}")
        return False
    tool = require_tool("qemu-img", "qemu-utils")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VmError(f"cannot create {path.parent}: {exc.strerror}; set [vms.disk] path or [vms] dir elsewhere") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        proc = subprocess.run([tool, "create", "-q", "-f", "qcow2", str(tmp), str(want)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise VmError(f"qemu-img create {path} failed: {proc.stderr.strip()}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # link + unlink renames without ever replacing: a disk made meanwhile wins and is kept.
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
