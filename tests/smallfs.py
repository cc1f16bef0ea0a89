"""A small real filesystem for free-space tests: tmpfs, else a loop-mounted ext2, else a skip that says why."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(argv: list[str], errors: list[str]) -> bool:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        errors.append(f"{argv[0]}: {exc}")
        return False
    if proc.returncode != 0:
        errors.append(f"{' '.join(argv[:3])}: {' '.join(proc.stderr.split())[:120]}")
    return proc.returncode == 0


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def small_fs(folder: Path, size_mib: int = 64, inodes: int | None = None) -> Iterator[Path]:
    """``folder`` as the mount point of a ``size_mib`` filesystem, unmounted afterwards; ``inodes``
    caps its files (room for bytes, none for names: ENOSPC where a free-space check sees plenty)."""
    folder.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    image = folder.with_name(folder.name + ".ext2")
    tmpfs = f"size={size_mib}m,mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
    mounted = _run(["mount", "-t", "tmpfs", "-o", tmpfs, "tmpfs", str(folder)], errors)
    if not mounted and shutil.which("mke2fs"):
        # -m 0: no blocks kept for root, so what statvfs calls free is what the test gets.
        mounted = (_run(["mke2fs", "-q", "-F", "-t", "ext2", "-m", "0", *(["-N", str(inodes)] if inodes else []),
                         str(image), f"{size_mib}M"], errors)
                   and _run(["mount", "-o", "loop", str(image), str(folder)], errors))
    if not mounted:
        image.unlink(missing_ok=True)
        pytest.skip(f"cannot mount a small filesystem ({'; '.join(errors)}): these tests need root with tmpfs "
                    "or loop devices")
    try:
        yield folder
    finally:
        if not _run(["umount", str(folder)], errors):
            _run(["umount", "-l", str(folder)], errors)  # something still holds it: detach now, free later
        image.unlink(missing_ok=True)
