"""HTTP transfer: a retrying Session, Range-resumed streaming into ``.part``, sha256 on a thread."""
from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import threading
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


def timeouts(timeout: float | tuple[float, float] | None) -> tuple[float, float]:
    """(connect, read) seconds: the argument, else $LFSPASS_TIMEOUT ('READ' or 'CONNECT,READ')."""
    raw = timeout if timeout is not None else os.environ.get("LFSPASS_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        parts = [float(x) for x in (raw if isinstance(raw, tuple) else str(raw).split(","))]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise DownloadError(f"timeout {raw!r} is not SECONDS or CONNECT,READ seconds (LFSPASS_TIMEOUT); fix or unset it")
    return (parts[0], parts[-1])


def retries_from(retries: int | None) -> int:
    """How often to retry: the argument, else $LFSPASS_RETRIES, else DEFAULT_RETRIES."""
    raw = retries if retries is not None else os.environ.get("LFSPASS_RETRIES", DEFAULT_RETRIES)
    try:
        return max(0, int(raw))
    except ValueError:
        raise DownloadError(f"LFSPASS_RETRIES={raw!r} is not a whole number; fix or unset it") from None


def make_session(retries: int) -> requests.Session:
    """A Session whose adapter retries connects, reads and 5xx/429 answers with backoff."""
    retry = Retry(
        total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
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


def transfer(session: requests.Session, url: str, part: Path, limits: tuple[float, float],
             retries: int, bar: Progress) -> tuple[str, int, bool]:
    """Download ``url`` into ``part`` (continuing it if present); return (sha256, new bytes, resumed)."""
    digest, offset, resumed, downloaded, idle = hashlib.sha256(), 0, False, 0, 0
    if part.exists():
        offset = hash_into(part, digest)  # the resumed file's hash must cover the old bytes too
    while True:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = session.get(url, headers=headers, stream=True, timeout=limits)
        except requests.RequestException as exc:
            raise DownloadError(f"cannot download {url}: {reason(exc)}; check the URL and the network, then run again") from None
        with resp:
            start = _range_start(resp) if resp.status_code == 206 else 0
            if offset and (resp.status_code == 416 or (resp.status_code == 206 and start != offset)):
                # .part is as long as the file or longer, or the server sent another range:
                # neither can be trusted to continue, so start from nothing.
                part.unlink()
                digest, offset = hashlib.sha256(), 0
                continue
            check_status(url, resp)
            if start != offset:  # the server ignored Range (200): its body starts at byte 0
                digest, offset = hashlib.sha256(), 0
            else:
                resumed = resumed or offset > 0
            length = resp.headers.get("Content-Length")
            bar.begin(offset, offset + int(length) if length and length.isdigit() else None)
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
                    fh.write(chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
                    bar.update(offset)
            downloaded += offset - before
            if lost is None:
                bar.close(offset)
                return digest.hexdigest(), downloaded, resumed
            # Resume while the link makes progress; give up after `retries` fruitless tries.
            idle = 0 if offset > before else idle + 1
            if idle > retries:
                bar.close(offset)
                raise DownloadError(
                    f"{url}: connection lost after {offset} bytes ({reason(lost)}); "
                    f"{part.name} is kept: run again to resume"
                )


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
