"""What one download may take: timeouts, a retry budget, and a size cap that fits the file."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from lfspass.diskspace import human
from lfspass.errors import FetchRequestError

SMALL_LIMIT = 8 << 20  # a checksum list or signature larger than this is not one
DEFAULT_TIMEOUT = (15.0, 60.0)  # (connect, read) seconds; LFSPASS_TIMEOUT overrides
DEFAULT_RETRIES = 4  # LFSPASS_RETRIES overrides
MAX_RETRIES = 100
# `lfspass fetch` without --max-size: the largest file lfspass itself downloads is a Debian
# installer image (DVD-1 about 4 GB, a BD image about 8 GB).  The recipe's own caps
# (installer.iso_max_size 16G, firmware.code_max_size / vars_max_size 64M) live in
# recipe.py; docs/reference/recipe.md lists them.
DEFAULT_MAX_SIZE = 16 << 30

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def timeouts(timeout: float | tuple[float, float] | None) -> tuple[float, float]:
    """(connect, read) seconds: the argument, else $LFSPASS_TIMEOUT ('READ' or 'CONNECT,READ')."""
    raw = timeout if timeout is not None else os.environ.get("LFSPASS_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        parts = [float(x) for x in (raw if isinstance(raw, tuple) else str(raw).split(","))]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(math.isfinite(p) and 0 < p <= 86400 for p in parts):
        raise FetchRequestError(f"timeout {raw!r} is not SECONDS or CONNECT,READ seconds (LFSPASS_TIMEOUT); fix or unset it")
    return (parts[0], parts[-1])


def retries_from(retries: int | None) -> int:
    """How often to retry: the argument, else $LFSPASS_RETRIES, else DEFAULT_RETRIES."""
    raw = retries if retries is not None else os.environ.get("LFSPASS_RETRIES", DEFAULT_RETRIES)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_RETRIES:
        raise FetchRequestError(f"LFSPASS_RETRIES={raw!r} is not a whole number from 0 to {MAX_RETRIES}; fix or unset it")
    return value


def parse_size(raw: str | int, key: str) -> int:
    """'512M', '8G', '16GiB', 4096 -> bytes (binary units); ``key`` names where it came from."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        m = None if raw <= 0 else re.fullmatch(r"(\d+)()", str(raw))
    else:
        m = re.fullmatch(r"\s*(\d{1,15})\s*([KMGT]?)(?:i?B)?\s*", str(raw), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise FetchRequestError(f"{key} {raw!r} is not a size such as 512M or 8G; fix it"
                            + (" or unset it" if key.isupper() else ""))
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def max_size_from(value: str | int | None, key: str = "--max-size") -> tuple[int, str]:
    """(the most bytes a download may write, what set it): ``value`` (from ``key``), else
    $LFSPASS_MAX_SIZE, else DEFAULT_MAX_SIZE."""
    if value is not None:
        return parse_size(value, key), f"{key} {value}"
    env = os.environ.get("LFSPASS_MAX_SIZE")
    if env is not None:
        return parse_size(env, "LFSPASS_MAX_SIZE"), f"LFSPASS_MAX_SIZE={env}"
    return DEFAULT_MAX_SIZE, f"{human(DEFAULT_MAX_SIZE)} by default; --max-size sets it"


@dataclass
class Limits:
    """What one download may take: a retry budget, the most bytes it may write (and who said
    so, for the error), and the size the caller expects, when it knows it."""

    retries: int
    ceiling: int
    ceiling_said: str = "--max-size"
    size: int | None = None
