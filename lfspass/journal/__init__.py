"""Host-edit journal: every path lfspass writes under a root, its previous content and sha256
before/after, kept in the root's state folder so that `lfspass rollback` can undo a run.

One run is one process (one `doit`, one `lfspass boot try`), opened at its first write;
`run()` opens an explicit one.  Previous contents live in
``<root>/var/lib/lfspass/journal/<run>/before/<n>`` (module trees as hard-linked copies:
lfspass never rewrites a file in place, so the links keep the old bytes).
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from lfspass import fsutil
from lfspass.errors import LfspassError

STATE_DIR = "var/lib/lfspass"
# lfspass's own bookkeeping there; VM folders (var/lib/lfspass/vms) hold launchers, which are journaled.
OWN_STATE = (f"{STATE_DIR}/journal", f"{STATE_DIR}/boot.json")
_current: dict[str, Run] = {}
_seq = itertools.count()


def state_dir(root: str | os.PathLike) -> Path:
    """The root's lfspass state folder (never journaled itself)."""
    return Path(root) / STATE_DIR


def journal_dir(root: str | os.PathLike) -> Path:
    return state_dir(root) / "journal"


# -- digests and copies -----------------------------------------------------------
def tree_listing(top: Path) -> dict[str, str]:
    """relative path -> sha256 (files) or 'link:<target>' below a folder."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            p = Path(dirpath, name)
            rel = str(p.relative_to(top))
            out[rel] = "link:" + os.readlink(p) if p.is_symlink() else fsutil.sha256_file(p)
    return out


def digest(path: Path) -> str | None:
    """sha256 of a file, 'link:<target>' of a symlink, 'tree:<sha256 of listing>' of a folder, None if absent."""
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_dir():
        listing = json.dumps(tree_listing(path), sort_keys=True).encode()
        return "tree:" + hashlib.sha256(listing).hexdigest()
    if path.is_file():
        return fsutil.sha256_file(path)
    return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    """Copy a folder with hard links where the filesystem allows (cheap for module trees)."""
    shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)


# -- folder swap --------------------------------------------------------------------
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


# -- runs ---------------------------------------------------------------------------
class Run:
    """One journaled run: its folder and entries (written to run.json after every step)."""

    def __init__(self, root: Path, label: str) -> None:
        self.root = Path(os.path.abspath(root))
        base = journal_dir(self.root)
        ns = time.time_ns()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(ns / 1e9)) + f".{ns // 1_000_000 % 1000:03d}"
        k = next(_seq)  # several runs of one process (the lab scenario) within a millisecond
        self.id = f"{stamp}-{os.getpid()}" + (f"-{k}" if k else "")
        self.dir = base / self.id
        self.data: dict[str, Any] = {"id": self.id, "label": label, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9)),
                     "started_ns": ns,
                     "entries": []}

    def save(self) -> None:
        """Write run.json (the run's folder appears with its first entry: no empty runs)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LfspassError(f"cannot write the journal {self.dir}: {exc.strerror}; choose a writable "
                               "install root ([host] root in the recipe) or fix its permissions") from None
        fsutil.write_atomic(self.dir / "run.json", json.dumps(self.data, indent=1) + "\n")

    def rel(self, path: Path) -> str | None:
        """Path relative to the root, or None when lfspass's own state (not journaled)."""
        full = Path(os.path.abspath(path))
        rel = os.path.relpath(full, self.root)
        if rel.startswith("..") or rel == "." or any(rel == s or rel.startswith(s + "/") for s in OWN_STATE):
            return None
        return rel

    def entry(self, rel: str) -> dict | None:
        return next((e for e in self.data["entries"] if e["path"] == rel), None)

    def before(self, path: Path) -> dict | None:
        rel = self.rel(path)
        if rel is None or self.entry(rel) is not None:
            return None  # the first previous content of a run is the one to restore
        n = len(self.data["entries"])
        self.save()
        entry: dict[str, Any] = {"path": rel, "before": digest(path), "after": None, "done": False, "saved": None, "mode": None}
        (self.dir / "before").mkdir(exist_ok=True)
        saved = self.dir / "before" / str(n)
        if path.is_symlink():
            entry["saved"] = None
        elif path.is_dir():
            link_tree(path, saved)
            entry["saved"] = f"before/{n}"
        elif path.is_file():
            shutil.copy2(path, saved)
            entry["saved"] = f"before/{n}"
            entry["mode"] = path.stat().st_mode & 0o7777
        self.data["entries"].append(entry)
        self.save()
        return entry

    def after(self, path: Path, new_entry: dict | None) -> None:
        rel = self.rel(path)
        entry = self.entry(rel) if rel is not None else None
        if entry is None:
            return
        entry["after"], entry["done"] = digest(path), True
        if new_entry is entry and entry["after"] == entry["before"]:
            # Nothing changed after all: drop the entry and its copy.
            self.data["entries"].remove(entry)
            if entry["saved"]:
                remove_path(self.dir / entry["saved"])
        self.save()


def _label() -> str:
    """The command line of this process (`python -m doit` shows as doit)."""
    if not sys.argv or not sys.argv[0]:
        return "lfspass"
    prog = Path(sys.argv[0])
    name = prog.parent.name if prog.name == "__main__.py" else prog.name
    return " ".join([name] + sys.argv[1:])


def current_run(root: str | os.PathLike) -> Run:
    key = os.path.abspath(root)
    if key not in _current:
        _current[key] = Run(Path(key), _label())
    return _current[key]


@contextlib.contextmanager
def run(root: str | os.PathLike, label: str) -> Iterator[Run]:
    """An explicit run (several runs in one process, as the lab scenario makes)."""
    key = os.path.abspath(root)
    previous = _current.get(key)
    _current[key] = r = Run(Path(key), label)
    try:
        yield r
    finally:
        if previous is None:
            _current.pop(key, None)
        else:
            _current[key] = previous


@contextlib.contextmanager
def editing(root: str | os.PathLike, path: str | os.PathLike) -> Iterator[None]:
    """Journal whatever the block does to ``path`` (a file, link or folder under ``root``)."""
    path = Path(path)
    fsutil._check_writable(path)  # a root that cannot be written fails before the journal opens
    r = current_run(root)
    new = r.before(path)
    try:
        yield
    finally:
        r.after(path, new)


# -- journaled writes -----------------------------------------------------------------
def write_atomic(root: str | os.PathLike, path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> bool:
    """fsutil.write_atomic, journaled when it changes the file."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw and (mode is None or (path.stat().st_mode & 0o7777) == mode):
            return False
    except OSError:
        pass
    with editing(root, path):
        return fsutil.write_atomic(path, raw, mode)


def copy_atomic(root: str | os.PathLike, src: str | os.PathLike, dst: str | os.PathLike, mode: int | None = None) -> bool:
    dst = Path(dst)
    if dst.is_file() and fsutil.sha256_file(src) == fsutil.sha256_file(dst):
        return False
    with editing(root, dst):
        return fsutil.copy_atomic(src, dst, mode)


def replace_dir(root: str | os.PathLike, staged: Path, dest: Path) -> None:
    with editing(root, dest):
        swap_dir(staged, dest)


def remove(root: str | os.PathLike, path: Path) -> None:
    if path.exists() or path.is_symlink():
        with editing(root, path):
            remove_path(path)
