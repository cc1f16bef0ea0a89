"""A one-line progress display on stderr, shown only on a terminal."""
from __future__ import annotations

import sys
import time


class Progress:
    """One self-overwriting stderr line; silent unless enabled (default: stderr is a tty)."""

    def __init__(self, name: str, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.name, self.start, self.last = name, time.monotonic(), 0.0
        self.total: int | None = None
        self.base = 0

    def begin(self, done: int, total: int | None) -> None:
        self.total, self.base, self.start = total, done, time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and not force):
            return
        self.last = now
        rate = (done - self.base) / max(now - self.start, 1e-6) / (1 << 20)
        size = f"{done / (1 << 20):.1f}" + (f"/{self.total / (1 << 20):.1f} MiB" if self.total else " MiB")
        pct = f" {100 * done // self.total:3d}%" if self.total else ""
        sys.stderr.write(f"\r{self.name}: {size}{pct} {rate:.1f} MiB/s\x1b[K")
        sys.stderr.flush()

    def close(self, done: int) -> None:
        if self.enabled:
            self.update(done, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()
