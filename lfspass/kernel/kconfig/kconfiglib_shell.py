"""Kconfig's $(shell,...) for kconfiglib: run in a scratch folder, prefetched in parallel.

kconfiglib loads this module through KCONFIG_FUNCTIONS (its documented hook), and our
``shell`` replaces its own.  Two reasons:
- The kernel's probes (``cc-option``) ``mkdir .tmp_$$`` in the current folder; make runs
  them in the build folder, so we run them in a scratch folder too, never in the caller's
  (possibly read-only) one, where every probe would fail and flip config values.
- A tree's probes (~90 compiler runs for x86, ~1.5 s one by one) are the same every time.
  The list from the last parse of the tree is started on all cores before parsing; each
  result still comes from running the command now, so an old list only costs speed.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from lfspass.errors import LfspassError
from lfspass.fsutil import write_atomic
from lfspass.kernel.kconfig.conf_source import cache_root

_pending: dict[str, Future] = {}
_seen: list[str] = []
_cwd: list[str] = []  # the scratch folder of the parse in progress


def _run(command: str, cwd: str, env: dict[str, str] | None) -> tuple[bytes, bytes]:
    proc = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True)
    return proc.stdout, proc.stderr


def _shell(kconf, _name, command):
    """kconfiglib's _shell_fn, reading a prefetched result when there is one."""
    fut = _pending.get(command)
    stdout, stderr = fut.result() if fut else _run(command, _cwd[-1] if _cwd else ".", None)
    _seen.append(command)
    try:
        out, err = stdout.decode(kconf._encoding), stderr.decode(kconf._encoding)
    except UnicodeDecodeError:
        out, err = stdout.decode(kconf._encoding, "replace"), stderr.decode(kconf._encoding, "replace")
    if err:
        kconf._warn(f"'{command}' wrote to stderr: {' '.join(err.splitlines())}",
                    kconf.filename, kconf.linenr)
    return "\n".join(out.splitlines()).rstrip("\n").replace("\n", " ")


functions = {"shell": (_shell, 1, 1)}  # the KCONFIG_FUNCTIONS contract


def _list_file(tree: Path, arch: str) -> Path:
    root = cache_root()
    digest = hashlib.sha256(f"{tree}\0{arch}".encode()).hexdigest()[:16]
    return root / f"kconfig-shell-{digest}.json"


@contextmanager
def session(tree: Path, arch: str) -> Iterator[None]:
    """Around one parse (inside the kernel environment): prefetch, then remember the list."""
    try:
        commands = json.loads(_list_file(tree, arch).read_text())
    except (OSError, ValueError):
        commands = []
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="lfspass-kconfig-") as scratch, \
            ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        _cwd.append(scratch)
        _seen.clear()
        _pending.clear()
        for command in dict.fromkeys(c for c in commands if isinstance(c, str)):
            _pending[command] = pool.submit(_run, command, scratch, env)
        try:
            yield
        finally:
            for fut in _pending.values():
                fut.cancel()
            _pending.clear()
            _cwd.pop()
    if _seen and list(dict.fromkeys(_seen)) != list(dict.fromkeys(commands)):
        try:
            write_atomic(_list_file(tree, arch), json.dumps(list(dict.fromkeys(_seen))))
        except (OSError, LfspassError):
            pass  # a list we cannot keep only costs speed next time

