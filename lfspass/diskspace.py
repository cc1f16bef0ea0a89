"""The free-space reserve: no large write lfspass makes may leave a filesystem with less than
min(1 GiB, 5 %) free, checked before it starts and while it runs."""
from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfspass.errors import LfspassError

RESERVE_MAX = 1 << 30   # a big filesystem keeps 1 GiB free for everything else on the machine
RESERVE_PERCENT = 5     # a small one keeps 5 % (1 GiB of a 4 GiB /boot would be a quarter)
STEP = 64 << 20         # a roomy filesystem is looked at once per 64 MiB written (bench/download.py)


def human(n: int) -> str:
    """1073741824 -> '1.0 GiB', 3355443 -> '3.2 MiB'."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if abs(n) >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Space:
    """What statvfs says about the filesystem holding ``folder``."""

    folder: Path
    free: int   # bytes this process may still write (f_bavail: root's own reserve excluded)
    total: int

    @property
    def reserve(self) -> int:
        return min(RESERVE_MAX, self.total * RESERVE_PERCENT // 100)

    @property
    def room(self) -> int:
        """Bytes that may still be written before the reserve is reached."""
        return max(0, self.free - self.reserve)

    def said(self) -> str:
        return (f"{self.folder} has {human(self.free)} free and lfspass keeps {human(self.reserve)} of it free "
                f"(the reserve: 1 GiB or {RESERVE_PERCENT} % of the filesystem, whichever is smaller)")


def space(path: str | os.PathLike) -> Space | None:
    """statvfs of ``path`` or of its nearest existing parent; None where none can be read."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None   # nothing to measure (a vanished folder): the write itself will say what is wrong
    return Space(probe, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def ensure_room(path: str | os.PathLike, need: int, what: str, error: type[LfspassError] = LfspassError,
                advice: str = "free space or choose another folder") -> None:
    """Refuse, before anything is written, when ``need`` more bytes at ``path`` would cross the reserve."""
    sp = space(path)
    if sp is not None and need > sp.room:
        raise error(f"{what}: needs {human(need)} but {sp.said()}; {advice}")


def allocated(path: str | os.PathLike) -> int:
    """Bytes a file or folder tree takes on disk (its blocks, so sparse files count as little as they hold)."""
    root = Path(path)
    if not root.is_dir():
        return root.lstat().st_blocks * 512 if root.exists() or root.is_symlink() else 0
    total = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass  # removed while we counted
    return total


class Guard:
    """The reserve checked while a stream is written, cheaply: statvfs again only after half
    the room the last look saw (at most STEP bytes), so a roomy filesystem costs one call per
    64 MiB and one close to its reserve is looked at chunk by chunk."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path, self.budget = Path(path), 0

    def allow(self, n: int) -> Space | None:
        """None when ``n`` more bytes keep the reserve, else the Space that says they would not."""
        if n <= self.budget:
            self.budget -= n
            return None
        sp = space(self.path)
        if sp is None:
            self.budget = STEP
            return None
        if n > sp.room:
            return sp
        self.budget = min(STEP, (sp.room - n) // 2)
        return None


class Watch:
    """Stops a running program (terminate) once the filesystem at ``path`` crosses the reserve.

    For tools that write what lfspass cannot meter (tar, mke2fs, qemu-img, mmdebstrap): the
    estimate checked before they start is the guard, this is the backstop.  ``crossed`` holds
    the Space seen when it stopped the program.
    """

    def __init__(self, proc: subprocess.Popen, path: str | os.PathLike, interval: float = 0.5) -> None:
        self.proc, self.path, self.interval = proc, Path(path), interval
        self.crossed: Space | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lfspass-reserve", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.interval) and self.proc.poll() is None:
            sp = space(self.path)
            if sp is not None and sp.free < sp.reserve:
                self.crossed = sp
                self.proc.terminate()
                return

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def run_guarded(argv: list[str], path: str | os.PathLike, what: str, error: type[LfspassError] = LfspassError,
                input: Any = None, advice: str = "free space or choose another folder",
                **popen: Any) -> subprocess.CompletedProcess:
    """subprocess.run for a tool that writes below ``path``, stopped (and an error) if it crosses the reserve."""
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    with subprocess.Popen(argv, **popen) as proc, Watch(proc, path) as watch:
        out, err = proc.communicate(input)
    if watch.crossed is not None:
        raise error(f"{what}: stopped {os.path.basename(argv[0])} before the disk filled up: {watch.crossed.said()}; "
                    f"{advice}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
