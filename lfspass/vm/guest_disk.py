"""The VM's qcow2 disk: made once at the recipe's size, never overwritten, truncated or resized."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lfspass.diskspace import ensure_room, space
from lfspass.diskspace import human as in_bytes
from lfspass.errors import ToolFailed, VmError
from lfspass.fsutil import require_tool
from lfspass.recipe.rules import SIZE_UNITS as _UNITS, parse_size

__all__ = ["parse_size"]   # its home is the spine now (the host's NUMA placement reads sizes too)


def private_dir(folder: Path) -> Path:
    """Create ``folder`` (and parents) 0700; an existing one keeps its mode (another guest or a
    libvirt user may rely on it), with one warning when others can list it.

    A VM folder holds the guest's disk, UEFI variables, preseed and logs; those files are
    made 0600 whatever the folder's mode.
    """
    try:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            return folder
        mode = folder.stat().st_mode & 0o7777
    except OSError as exc:
        raise VmError(f"cannot create {folder} as a private folder: {exc.strerror}; "
                      "set [[vms]] dir elsewhere or fix its owner") from None
    if mode & 0o044 and folder not in _WARNED:
        _WARNED.add(folder)
        print(f"warning: {folder} is {mode:04o}: others can list it (its disk and VARS stay 0600); lfspass leaves "
              f"an existing folder's mode as it is: `chmod go-r {folder}` to keep its names private", file=sys.stderr)
    return folder


_WARNED: set[Path] = set()


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


def measure(size: int, preallocation: str = "off") -> tuple[int, int]:
    """(bytes a new qcow2 takes now, bytes it takes once the guest has filled it), from ``qemu-img measure``."""
    tool = require_tool("qemu-img", "qemu-utils")
    proc = subprocess.run([tool, "measure", "--output=json", "-O", "qcow2", "-o", f"preallocation={preallocation}",
                           "--size", str(size)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolFailed(f"qemu-img measure failed: {proc.stderr.strip()[-200:]}")
    found = json.loads(proc.stdout)
    return int(found["required"]), int(found["fully-allocated"])


def _check_room(path: Path, want: int, size: str, where: str, preallocation: str) -> None:
    """A disk taken whole now must keep the free-space reserve; a sparse one that could outgrow it is said."""
    now, full = measure(want, preallocation)
    ensure_room(path.parent, now, f"{path} ({size}, preallocation={preallocation})", VmError,
                f"free space, make {where} smaller, or set [vms.disk] path on another filesystem")
    sp = space(path.parent)
    if sp is not None and full > sp.room:
        print(f"warning: {path}: a sparse {size} disk on a filesystem with {in_bytes(sp.free)} free "
              f"({in_bytes(sp.reserve)} kept as the reserve): a guest that writes more than {in_bytes(sp.room)} fills "
              f"{sp.folder}; free space or choose a smaller {where}", file=sys.stderr)


def ensure_disk(path: Path, size: str, where: str = "disk.size", preallocation: str = "off") -> bool:
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
    _check_room(path, want, size, where, preallocation)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        proc = subprocess.run([tool, "create", "-q", "-f", "qcow2", "-o", f"preallocation={preallocation}", str(tmp),
                               str(want)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolFailed(f"qemu-img create {path} failed: {proc.stderr.strip()}")
        os.chmod(tmp, 0o600)  # the guest's data: its owner only
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


def data_extents(path: Path) -> list[tuple[int, int]]:
    """(start, length) of every guest-visible range that holds non-zero data (``qemu-img map``).

    A disk lfspass just made maps to nothing; a partition table, a file system or any
    written sector shows up here, so an install never starts on a disk holding a guest.
    """
    tool = require_tool("qemu-img", "qemu-utils")
    proc = subprocess.run([tool, "map", "-U", "--output=json", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise VmError(f"{path} is not a disk image qemu-img can read ({proc.stderr.strip()[-200:]}); "
                      "move it away or point [vms.disk] path elsewhere")
    try:
        return [(int(e["start"]), int(e["length"])) for e in json.loads(proc.stdout)
                if e.get("data") and not e.get("zero")]
    except (ValueError, KeyError, TypeError):
        raise ToolFailed(f"qemu-img map {path} gave output lfspass cannot read; check the image by hand") from None


def take_snapshot(path: Path, name: str) -> None:
    """An internal qcow2 snapshot (the disk's state now, kept inside the same file)."""
    tool = require_tool("qemu-img", "qemu-utils")
    proc = subprocess.run([tool, "snapshot", "-c", name, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolFailed(f"cannot snapshot {path} before reinstalling ({proc.stderr.strip()[-200:]}); "
                         "the install was not started: stop whatever holds the image, or copy it away yourself")
