"""Journaled runs: one ``Run`` per process and root (opened at its first write), or an explicit
one from ``run()``; ``editing`` records a path's previous content before a block changes it.

Previous contents live in ``<root>/var/lib/lfspass/journal/<run>/before/<n>`` (module trees as
hard-linked copies: lfspass never rewrites a file in place, so the links keep the old bytes).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lfspass import fsutil
from lfspass.errors import InputError
from lfspass.journal.digest import digest
from lfspass.journal.state import OWN_STATE, journal_dir
from lfspass.journal.tree import link_tree, remove_path

_current: dict[str, Run] = {}
_seq = itertools.count()


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
            raise InputError(f"cannot write the journal {self.dir}: {exc.strerror}; choose a writable "
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
        entry: dict[str, Any] = {"path": rel, "before": digest(path).text(), "after": None, "done": False,
                                 "saved": None, "mode": None}
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
        entry["after"], entry["done"] = digest(path).text(), True
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
    fsutil.check_writable(path)  # a root that cannot be written fails before the journal opens
    r = current_run(root)
    new = r.before(path)
    try:
        yield
    finally:
        r.after(path, new)
