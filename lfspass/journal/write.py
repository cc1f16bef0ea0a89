"""Journaled writes: fsutil's atomic, change-only writes (and a folder swap, a removal), each
recorded in the current run only when it changes something.

Every write lands below the root: a link inside it is followed (a linked grub.cfg is written
where it points, and stays a link), one that leads out of the root is refused (fsutil.beneath)."""
from __future__ import annotations

import os
from pathlib import Path

from lfspass import fsutil
from lfspass.errors import InputError
from lfspass.journal.runs import editing
from lfspass.journal.tree import remove_path, swap_dir


def write_atomic(root: str | os.PathLike, path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> bool:
    """fsutil.write_atomic, journaled when it changes the file."""
    path = fsutil.beneath(root, path)
    raw = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw and (mode is None or (path.stat().st_mode & 0o7777) == mode):
            return False
    except OSError:
        pass
    with editing(root, path):
        return fsutil.write_atomic(path, raw, mode)


def copy_atomic(root: str | os.PathLike, src: str | os.PathLike, dst: str | os.PathLike, mode: int | None = None) -> bool:
    dst = fsutil.beneath(root, dst)
    if dst.is_file() and fsutil.sha256_file(src) == fsutil.sha256_file(dst):
        return False
    with editing(root, dst):
        return fsutil.copy_atomic(src, dst, mode)


def write_link(root: str | os.PathLike, path: str | os.PathLike, target: str) -> bool:
    """A symlink ``path`` -> ``target`` (text, not followed), journaled when it changes; True if it did.
    The new link is made beside the old path and moved over it, so it is never missing."""
    path = fsutil.beneath(root, Path(path).parent) / Path(path).name   # the link itself, not what it names
    if path.is_symlink() and os.readlink(path) == target:
        return False
    if path.is_dir() and not path.is_symlink():
        raise InputError(f"cannot write the link {path}: it is a folder; move it aside, then re-run")
    path.parent.mkdir(parents=True, exist_ok=True)
    with editing(root, path):
        tmp = path.with_name(f".{path.name}.lfspass-new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, path)
    return True


def replace_dir(root: str | os.PathLike, staged: Path, dest: Path) -> None:
    dest = fsutil.beneath(root, dest)
    with editing(root, dest):
        swap_dir(staged, dest)


def remove(root: str | os.PathLike, path: Path) -> None:
    path = fsutil.beneath(root, path.parent) / path.name   # a link itself is removed, not what it names
    if path.exists() or path.is_symlink():
        with editing(root, path):
            remove_path(path)
