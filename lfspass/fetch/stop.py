"""SIGTERM or SIGINT during a transfer: a ``.part`` the server can continue is kept and said so, another removed."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from lfspass.errors import DownloadError
from lfspass.progress import Progress


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a transfer: unwinds as Ctrl-C does, so the ``.part`` is dealt with."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP raise Stopped while a transfer runs (SIGINT raises KeyboardInterrupt already)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a worker leaves them alone
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    saved = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class Seen:
    """What the server showed so far: whether it can continue a ``.part`` (None: no answer yet)."""

    resumable: bool | None = None


def interrupted(exc: KeyboardInterrupt, url: str, part: Path, seen: Seen, bar: Progress) -> DownloadError:
    """The one line for a stopped transfer: a ``.part`` the server can continue is kept, another removed."""
    name = str(exc) if isinstance(exc, Stopped) else "SIGINT (Ctrl-C)"
    code = 128 + (exc.signum if isinstance(exc, Stopped) else signal.SIGINT)
    have = part.stat().st_size if part.exists() else 0
    bar.close(have)
    if have and seen.resumable is not False:  # None: no answer yet, the .part is an earlier run's
        how = "the server resumes with Range" if seen.resumable else "as an earlier run left it"
        return DownloadError(f"{url}: stopped by {name} after {have} bytes; {part} is kept ({how}): run the "
                             "same command again to continue from it", exit_code=code)
    part.unlink(missing_ok=True)
    if not have:
        return DownloadError(f"{url}: stopped by {name} before any byte was written; run it again", exit_code=code)
    return DownloadError(f"{url}: stopped by {name} after {have} bytes; {part.name} was removed: the server cannot "
                         "resume (no Range support), so a new run starts over", exit_code=code)
