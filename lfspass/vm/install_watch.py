"""Watch an installer's serial log: an error screen (`[!!]`) or a long silence ends the install early."""
from __future__ import annotations

import re
import time
from pathlib import Path

# debian-installer's newt screens over a serial line: CSI and charset escapes around the text.
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMNOZc]")
_LINE_SET = re.compile(rb"\x1b\(0.*?(?:\x1b\(B|$)", re.S)
ERROR_SCREEN = b"[!!]"
SETTLE = 2.0  # seconds to let the error screen finish drawing before its text is read
TAIL = 64 << 10


def screen_text(raw: bytes, limit: int = 300) -> str:
    """Readable words of a newt screen: escapes, box drawing and control bytes dropped, one line."""
    raw = _LINE_SET.sub(b" ", raw)  # box drawing: letters in the VT100 line set between ESC(0 and ESC(B
    text = _ESCAPES.sub(b" ", raw).decode("ascii", errors="ignore")
    text = re.sub(r"[^\x20-\x7e]+", " ", text)
    text = re.sub(r"[-=|+_]{3,}|\s[qxlkmjtuvwn]{3,}\s", " ", text)  # box lines (ASCII or VT100 line set)
    return " ".join(text.split())[:limit]


class SerialWatch:
    """Polls a growing file; ``poll()`` returns why the install should stop, or None."""

    def __init__(self, path: Path, silence: float, clock=time.monotonic) -> None:
        self.path, self.silence, self.clock = path, silence, clock
        self.offset, self.tail = 0, b""
        self.last_growth = clock()
        self.seen_error: float | None = None
        self.error_at = 0

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                new = fh.read()
        except OSError:
            return
        if new:
            self.offset += len(new)
            self.last_growth = self.clock()
            keep = len(self.tail)
            self.tail = (self.tail + new)[-TAIL:]
            if self.seen_error is None:
                start = max(0, keep - len(ERROR_SCREEN) - (keep + len(new) - len(self.tail)))
                found = self.tail.find(ERROR_SCREEN, start)
                if found >= 0:
                    self.seen_error, self.error_at = self.clock(), found
            else:
                self.error_at = max(0, self.error_at - (keep + len(new) - len(self.tail)))

    def poll(self) -> str | None:
        self._read()
        now = self.clock()
        if self.seen_error is not None and now - self.seen_error >= SETTLE:
            return f"the installer shows an error screen: {screen_text(self.tail[self.error_at:])}"
        if self.silence and now - self.last_growth > self.silence:
            last = screen_text(self.tail[-2000:], 200)
            return (f"no installer output for {int(self.silence)} s (installer.silence)"
                    + (f"; last screen: {last}" if last else ""))
        return None
