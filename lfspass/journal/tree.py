"""Folder moves the journal relies on: hard-linked copies, an atomic swap, removal set aside first."""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    """Copy a folder with hard links where the filesystem allows (cheap for module trees)."""
    shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two paths in one step; False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_dir(staged: Path, dest: Path) -> None:
    """Put the folder ``staged`` (made beside ``dest``) at ``dest``.

    Where the kernel can exchange two paths atomically (ext4, xfs, btrfs, tmpfs), ``dest``
    is a complete folder at every instant; elsewhere the old one is renamed aside first
    and stays under a dot-name beside ``dest`` until the new one is in.
    """
    if dest.is_dir() and not dest.is_symlink() and _exchange(staged, dest):
        shutil.rmtree(staged, ignore_errors=True)  # now holds the old folder
        return
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / "x")
    os.rename(staged, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_path(path: Path) -> None:
    """Remove a file, link or folder (a folder is renamed aside first, then deleted)."""
    if path.is_dir() and not path.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.rm-", dir=path.parent))
        os.rename(path, aside / "x")
        shutil.rmtree(aside, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
