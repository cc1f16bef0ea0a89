"""Undo journaled runs: put every path a run (and each later run) wrote back as it was before."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lfspass import fsutil, journal
from lfspass.errors import InputError
from lfspass.journal import sysfs
from lfspass.journal.digest import Digest


def list_runs(root: str | os.PathLike) -> list[dict]:
    """Every run's run.json, oldest first."""
    base = journal.journal_dir(root)
    runs = []
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            data = json.loads((d / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if data.get("entries"):
            data["dir"] = str(d)
            runs.append(data)
    runs.sort(key=lambda r: (r.get("started_ns", 0), r["id"]))  # runs of one second from several processes
    return runs


def find_run(runs: list[dict], name: str | None, root: Path) -> int:
    """Index of RUN (an id, a unique prefix of one, or its number in --list); the newest without one."""
    if not runs:
        raise InputError(f"{journal.journal_dir(root)}: no journaled runs under {root}; nothing to roll back")
    if name is None:
        return len(runs) - 1
    if name.isdigit() and 1 <= int(name) <= len(runs) and not any(r["id"] == name for r in runs):
        return int(name) - 1
    hits = [i for i, r in enumerate(runs) if r["id"] == name] or [i for i, r in enumerate(runs) if r["id"].startswith(name)]
    if len(hits) != 1:
        raise InputError(f"run '{name}' {'is ambiguous' if hits else 'not found'} under {journal.journal_dir(root)}; "
                         "see `lfspass rollback --list`")
    return hits[0]


@dataclass
class Target:
    rel: str
    source: dict      # the earliest undone run's entry: what to put back
    source_dir: Path
    expected: str | None   # what lfspass left there last (None: a run was cut off; anything goes)
    known: bool


def plan(runs: list[dict], start: int) -> dict[str, Target]:
    """Path -> what to restore, undoing runs[start:] newest first."""
    targets: dict[str, Target] = {}
    for r in reversed(runs[start:]):
        for e in r["entries"]:
            t = targets.get(e["path"])
            if t is None:
                targets[e["path"]] = Target(e["path"], e, Path(r["dir"]), e["after"], e["done"])
            else:
                t.source, t.source_dir = e, Path(r["dir"])
    return targets


def _now(root: Path, t: Target) -> str | None:
    """What the path holds now, in the words of its entry (a digest, or a sysfs device's state)."""
    return sysfs.current(root, t.rel) if sysfs.is_sysfs(t.source) else journal.digest(root / t.rel).text()


def _stage(root: Path, t: Target) -> Path | None:
    """A temporary copy of the previous content beside the destination (None: it was absent)."""
    dest = root / t.rel
    e = t.source
    if e["before"] is None or sysfs.is_sysfs(e):
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.rollback-", dir=dest.parent)) / "x"
    before = Digest.parse(e["before"])
    if before.kind == "link":
        os.symlink(before.value, tmp)
    elif before.kind == "tree":
        journal.link_tree(t.source_dir / e["saved"], tmp)
    else:
        shutil.copyfile(t.source_dir / e["saved"], tmp)
        os.chmod(tmp, e.get("mode") or 0o644)
    return tmp


def rollback(root: str | os.PathLike, name: str | None = None, force: bool = False) -> tuple[dict, list[str]]:
    """Restore the state before run ``name`` (default: the newest); (the run, paths restored)."""
    root = Path(os.path.abspath(root))
    runs = list_runs(root)
    start = find_run(runs, name, root)
    targets = plan(runs, start)
    changed = []
    for t in targets.values():
        now = _now(root, t)
        if t.known and now != t.expected and now != t.source["before"]:
            changed.append(t.rel)
    if changed and not force:
        raise InputError(
            f"not rolled back: {', '.join(changed)} under {root} changed since lfspass wrote "
            f"{'it' if len(changed) == 1 else 'them'} (edited by hand?); nothing was restored; "
            f"keep a copy of your edit, then run `lfspass rollback {runs[start]['id']} --force` to overwrite")
    todo = [t for t in targets.values() if _now(root, t) != t.source["before"]]
    sysfs.refuse_held(root, [t.rel for t in todo if sysfs.is_sysfs(t.source)])
    staged: dict[str, Path | None] = {}
    try:
        for t in todo:  # every new content is in place beside its file before the first one moves
            staged[t.rel] = _stage(root, t)
    except BaseException:
        for tmp in staged.values():
            if tmp is not None:
                shutil.rmtree(tmp.parent, ignore_errors=True)
        raise
    restored = []
    with journal.run(root, f"lfspass rollback {runs[start]['id']}"):
        for t in todo:
            if sysfs.is_sysfs(t.source):  # a device's driver: put back with the kernel's writes
                sysfs.restore(root, t.rel, t.source["before"])
                restored.append(t.rel)
                continue
            dest, tmp = root / t.rel, staged[t.rel]
            with journal.editing(root, dest):
                if tmp is None:
                    journal.remove_path(dest)
                elif tmp.is_dir() and not tmp.is_symlink():
                    journal.swap_dir(tmp, dest)
                else:
                    os.replace(tmp, dest)
            if tmp is not None:
                shutil.rmtree(tmp.parent, ignore_errors=True)
            restored.append(t.rel)
    for r in runs[start:]:
        data = json.loads((Path(r["dir"]) / "run.json").read_text())
        data.setdefault("rolled_back", True)
        fsutil.write_atomic(Path(r["dir"]) / "run.json", json.dumps(data, indent=1) + "\n")
    return runs[start], sorted(restored)
