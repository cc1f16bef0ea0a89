"""HTTP transfer: a retrying Session, Range-resumed streaming into ``.part``, sha256 on a thread."""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import queue
import re
import threading
import time
from pathlib import Path

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from lfspass.errors import DownloadError
from lfspass.progress import Progress

CHUNK = 1 << 20  # big reads keep Python's per-chunk cost small next to curl
SMALL_LIMIT = 8 << 20  # a checksum list or signature larger than this is not one
DEFAULT_TIMEOUT = (15.0, 60.0)  # (connect, read) seconds; LFSPASS_TIMEOUT overrides
DEFAULT_RETRIES = 4  # LFSPASS_RETRIES overrides
MAX_RETRIES = 100
BACKOFF = 0.5  # seconds before the first retry, doubled each time up to 8
RETRY_STATUS = (429, 500, 502, 503, 504)  # answers worth asking again
DEFAULT_CEILING = 64 << 30  # a download with no announced size stops here; LFSPASS_MAX_SIZE overrides


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
        raise DownloadError(f"timeout {raw!r} is not SECONDS or CONNECT,READ seconds (LFSPASS_TIMEOUT); fix or unset it", exit_code=2)
    return (parts[0], parts[-1])


def retries_from(retries: int | None) -> int:
    """How often to retry: the argument, else $LFSPASS_RETRIES, else DEFAULT_RETRIES."""
    raw = retries if retries is not None else os.environ.get("LFSPASS_RETRIES", DEFAULT_RETRIES)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_RETRIES:
        raise DownloadError(f"LFSPASS_RETRIES={raw!r} is not a whole number from 0 to {MAX_RETRIES}; fix or unset it", exit_code=2)
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def ceiling_from(value: str | int | None) -> int:
    """The most bytes a download without an announced size may write: the argument, else
    $LFSPASS_MAX_SIZE, else DEFAULT_CEILING.  Sizes such as 512M, 8G."""
    raw = value if value is not None else os.environ.get("LFSPASS_MAX_SIZE")
    if raw is None:
        return DEFAULT_CEILING
    if isinstance(raw, int) and not isinstance(raw, bool):
        m = None if raw <= 0 else re.fullmatch(r"(\d+)()", str(raw))
    else:
        m = re.fullmatch(r"\s*(\d{1,15})\s*([KMGT]?)(?:i?B)?\s*", str(raw), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise DownloadError(f"maximum size {raw!r} is not a size such as 512M or 8G (--max-size / LFSPASS_MAX_SIZE); "
                            "fix or unset it", exit_code=2)
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def make_session(retries: int) -> requests.Session:
    """A Session whose adapter retries connects, reads and 5xx/429 answers with backoff."""
    retry = Retry(
        total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
        status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # hand back the last answer so the error names its status
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Content-Encoding would make Range offsets and the hash refer to different bytes.
    session.headers.update({"Accept-Encoding": "identity", "User-Agent": "lfspass-fetch"})
    return session


def check_status(url: str, resp: requests.Response) -> None:
    """DownloadError naming the URL and status for any 4xx/5xx answer."""
    if resp.status_code >= 400:
        advice = ("the server failed even after retries: run again later or use another mirror"
                  if resp.status_code >= 500 or resp.status_code == 429
                  else "check the URL (mirrors move old releases) and run again")
        raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason or ''}".rstrip() + f"; {advice}")


def reason(exc: BaseException) -> str:
    """The innermost useful words of a requests/urllib3 exception, on one line."""
    text = str(exc)
    m = re.search(r"\(Caused by \w+\((?:.*?: )?'?(.*?)'?\)\)", text)
    text = m.group(1).strip("'\" ") if m else text
    if "timed out" in text.lower():
        return "timed out (no data from the server)"
    return " ".join(text.split())[:200]


class Limits:
    """What one download may take: a retry budget and the most bytes it may write."""

    def __init__(self, retries: int, ceiling: int | None, size: int | None = None) -> None:
        self.retries, self.ceiling, self.size = retries, ceiling, size


def _total(resp: requests.Response, start: int) -> int | None:
    """The whole file's length this answer announces (Content-Range total, else start + Content-Length)."""
    m = re.fullmatch(r"bytes \d+-\d+/(\d+)", resp.headers.get("Content-Range", "").strip())
    if m:
        return int(m.group(1))
    length = resp.headers.get("Content-Length", "")
    return start + int(length) if length.isdigit() else None


def _check_space(folder: Path, need: int, url: str) -> None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise DownloadError(f"{url}: {need} more bytes needed but {folder} has {free} free; free space or choose "
                            "another -o")


def transfer(session: requests.Session, url: str, part: Path, limits: tuple[float, float],
             budget: Limits, bar: Progress) -> tuple[str, int, bool]:
    """Download ``url`` into ``part`` (continuing it if present); return (sha256, new bytes, resumed).

    Every attempt that does not reach a byte never reached before spends one retry
    (a cut, a restart from zero, a 206 for another range or none), with backoff between
    them, so a server that cuts and ignores Range ends after ``budget.retries`` tries.
    A body longer than the expected size (the first answer's length, else ``budget.size``,
    else ``budget.ceiling``) is cut and ``part`` removed.
    """
    digest, offset, resumed, downloaded, failures, furthest = hashlib.sha256(), 0, False, 0, 0, 0
    expected, why = budget.size, None
    if part.exists():
        offset = hash_into(part, digest)  # the resumed file's hash must cover the old bytes too
        furthest = offset
    while True:
        if why is not None:
            failures += 1
            if failures > budget.retries:
                bar.close(offset)
                raise DownloadError(f"{url}: gave up after {failures} tries ({why}); "
                                    + (f"{part.name} is kept: run again to resume" if part.exists() else
                                       "check the URL and the network, run again later or use another mirror"))
            time.sleep(min(BACKOFF * 2 ** (failures - 1), 8.0))
            why = None
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = session.get(url, headers=headers, stream=True, timeout=limits)
        except (requests.ConnectionError, requests.Timeout) as exc:
            why = f"cannot download: {reason(exc)}"  # refused, reset, no answer: one try spent
            continue
        except requests.RequestException as exc:
            raise DownloadError(f"cannot download {url}: {reason(exc)}; check the URL and the network, then run again") from None
        if resp.status_code in RETRY_STATUS:
            why = f"HTTP {resp.status_code} {resp.reason or ''}".rstrip()
            resp.close()
            continue
        with resp:
            start = _range_start(resp) if resp.status_code == 206 else 0
            if offset and (resp.status_code == 416 or (resp.status_code == 206 and start != offset)):
                # .part is as long as the file or longer, or the server sent another range:
                # neither can be trusted to continue, so start from nothing.
                part.unlink()
                digest, offset = hashlib.sha256(), 0
                why = "the server answered another range than asked" if resp.status_code == 206 else \
                    "the kept .part was as long as the file or longer"
                continue
            if resp.status_code == 206 and start != offset:
                why = "a 206 answer without a usable Content-Range"
                continue
            check_status(url, resp)
            if start != offset:  # the server ignored Range (200): its body starts at byte 0
                digest, offset = hashlib.sha256(), 0
            else:
                resumed = resumed or offset > 0
            total = _total(resp, start)
            if expected is None:
                expected = total  # the first answer's length is the file's length from now on
            elif total is not None and total != expected:
                if expected == budget.size:
                    raise DownloadError(f"{url}: the server announces {total} bytes but {expected} were expected; "
                                        "nothing was kept: check the URL and the expected size")
                raise DownloadError(f"{url}: the server now says {total} bytes, earlier {expected}; the file "
                                    "changed upstream or a proxy is broken: run again later or use another mirror")
            cap = expected if expected is not None else budget.ceiling
            if expected is not None:
                _check_space(part.parent, expected - offset, url)
            bar.begin(offset, expected)
            before, lost = offset, None
            # read1 hands over every byte that arrived before a cut (iter_content drops the
            # last partial chunk), so a resume never fetches a byte twice.
            read = resp.raw.read1 if hasattr(resp.raw, "read1") else resp.raw.read
            # No fsync: a file torn by a power cut fails the hash check on the next run and
            # is fetched again, and skipping it keeps a 4 GB image at curl's speed.
            with open(part, "ab" if offset else "wb") as fh, _Hasher(digest) as hasher:
                while True:
                    try:
                        chunk = read(CHUNK, decode_content=False)
                    except (urllib3.exceptions.HTTPError, OSError) as exc:  # cut, reset, stall
                        lost = exc
                        break
                    if not chunk:
                        break
                    if cap is not None and offset + len(chunk) > cap:
                        fh.close()
                        part.unlink(missing_ok=True)
                        bar.close(offset)
                        what = "its expected size" if expected is not None else "the size ceiling (LFSPASS_MAX_SIZE)"
                        raise DownloadError(f"{url}: more than {cap} bytes, {what}; the partial file was removed: "
                                            "check the URL" + ("" if expected is not None else
                                                               " or raise LFSPASS_MAX_SIZE / --max-size"))
                    fh.write(chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
                    bar.update(offset)
            downloaded += offset - before
            if lost is None:
                bar.close(offset)
                return digest.hexdigest(), downloaded, resumed
            if offset > furthest:  # new bytes: the link is worth following, the budget is not spent
                furthest = offset
                continue
            why = f"connection lost after {offset} bytes: {reason(lost)}"


class _Hasher:
    """sha256 on a worker thread: hashlib drops the GIL, so hashing overlaps socket and disk."""

    def __init__(self, digest) -> None:
        self.digest = digest
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # <= 8 MiB in flight
        self.thread = threading.Thread(target=self._run, name="sha256", daemon=True)

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.queue.put(chunk)

    def __enter__(self) -> _Hasher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.queue.put(None)  # every queued chunk is hashed before the digest is read
        self.thread.join()


def _range_start(resp: requests.Response) -> int:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else -1


def hash_into(path: Path, digest, out: Path | None = None, bar: Progress | None = None) -> int:
    """Feed ``path`` to ``digest`` (copying it to ``out`` when given); return its size."""
    size, buf = 0, bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as src, (open(out, "wb") if out else contextlib.nullcontext()) as dst:
        while n := src.readinto(buf):
            digest.update(view[:n])
            if dst:
                dst.write(view[:n])
            size += n
            if bar:
                bar.update(size)
    return size
