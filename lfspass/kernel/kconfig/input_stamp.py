"""The no-change fast path of configure.configure(): a stamp of the inputs that made a .config."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from lfspass.errors import LfspassError
from lfspass.fsutil import write_atomic
from lfspass.kernel.kconfig.result import Resolved, Skipped, decisions_from_json, decisions_json

_VERSION = 2  # bump when configure() would write different bytes for the same inputs


def files_key(tree: Path, names: Sequence[str | Path]) -> list[tuple[str, int, int]]:
    """(name, mtime_ns, size) of each file: cheap to take (~1,500 stats for x86), catches edits."""
    out = []
    for name in names:
        try:
            st = (tree / name).stat()
            out.append((str(name), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(name), 0, -1))
    return out


def _path(config: Path) -> Path:
    return config.parent / f".{config.name}.lfspass-kconfig"


def inputs_key(**inputs) -> str:
    """A digest of everything besides the Kconfig files that decides the output bytes."""
    gcc = shutil.which("gcc")
    # The compiler answers the Kconfig $(shell ...) probes; an upgrade may change them.
    inputs["gcc"] = (gcc, os.stat(gcc).st_mtime_ns) if gcc else None
    inputs["v"] = _VERSION
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def hit(config: Path, key: str, tree: Path, current: bytes) -> tuple[list[Skipped], list[Resolved]] | None:
    """(skipped, resolved) of the last run when it had these inputs and wrote ``current``."""
    try:
        stamp = json.loads(_path(config).read_text())
        if (stamp["key"] == key and stamp["out"] == hashlib.sha256(current).hexdigest()
                and files_key(tree, stamp["kconfig"]) == [tuple(x) for x in stamp["files"]]):
            return decisions_from_json(stamp)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def record(config: Path, key: str, out: bytes, kconfig_files: list[str], files: list,
           skipped: list[Skipped], resolved: list[Resolved]) -> None:
    """Remember the inputs that produced ``out``; a folder we cannot write just loses the speed-up."""
    try:
        write_atomic(_path(config), json.dumps({
            "key": key, "out": hashlib.sha256(out).hexdigest(), "kconfig": kconfig_files,
            "files": files, **decisions_json(skipped, resolved)}))
    except (OSError, LfspassError):
        pass


def written_by_lfspass(config: Path) -> bool:
    """False when ``config`` differs from what configure() last wrote there (a hand edit)."""
    if not config.exists():
        return True  # nothing to protect; the missing target reruns the step anyway
    try:
        out = json.loads(_path(config).read_text())["out"]
        return out == hashlib.sha256(config.read_bytes()).hexdigest()
    except (OSError, ValueError, KeyError, TypeError):
        return False
