"""HTTP transfer: a retrying Session, Range-resumed streaming into ``.part`` within its caps and the
free-space reserve, sha256 on a thread."""
from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import threading
import time
from pathlib import Path

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from lfspass.diskspace import Guard, ensure_room, human
from lfspass.errors import DownloadError
from lfspass.fetch.limits import Limits
from lfspass.fetch.stop import Seen, interrupted, signals_raise
from lfspass.progress import Progress

CHUNK = 1 << 20  # big reads keep Python's per-chunk cost small next to curl
BACKOFF = 0.5  # seconds before the first retry, doubled each time up to 8
RETRY_STATUS = (429, 500, 502, 503, 504)  # answers worth asking again


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


def _total(resp: requests.Response, start: int) -> int | None:
    """The whole file's length this answer announces (Content-Range total, else start + Content-Length)."""
    m = re.fullmatch(r"bytes \d+-\d+/(\d+)", resp.headers.get("Content-Range", "").strip())
    if m:
        return int(m.group(1))
    length = resp.headers.get("Content-Length", "")
    return start + int(length) if length.isdigit() else None


def transfer(session: requests.Session, url: str, part: Path, limits: tuple[float, float],
             budget: Limits, bar: Progress) -> tuple[str, int, bool]:
    """Download ``url`` into ``part`` (continuing it if present); return (sha256, new bytes, resumed).

    Every attempt that does not reach a byte never reached before spends one retry
    (a cut, a restart from zero, a 206 for another range or none), with backoff between
    them, so a server that cuts and ignores Range ends after ``budget.retries`` tries.
    An announced size over ``budget.ceiling`` is refused before a byte is written; a body
    longer than the expected size (the first answer's length, else ``budget.size``, else
    the ceiling) is cut and ``part`` removed, and so is one that would cross the free-space
    reserve.  SIGTERM/SIGINT keep ``part`` where the server can continue it.
    """
    seen = Seen()
    with signals_raise():
        try:
            return _transfer(session, url, part, limits, budget, bar, seen)
        except KeyboardInterrupt as exc:
            raise interrupted(exc, url, part, seen, bar) from None


def _over_cap(url: str, part: Path, cap: int, expected: int | None, budget: Limits) -> DownloadError:
    part.unlink(missing_ok=True)
    if expected is not None:
        return DownloadError(f"{url}: more than {cap} bytes, its expected size; the partial file was removed: "
                             "check the URL")
    return DownloadError(f"{url}: more than {cap} bytes ({human(cap)}), the size cap ({budget.ceiling_said}); the "
                         "partial file was removed: check the URL or raise the cap")


def _transfer(session: requests.Session, url: str, part: Path, limits: tuple[float, float],
              budget: Limits, bar: Progress, seen: Seen) -> tuple[str, int, bool]:
    digest, offset, resumed, downloaded, failures, furthest = hashlib.sha256(), 0, False, 0, 0, 0
    expected, why = budget.size, None
    dest, guard = part.with_name(part.name.removesuffix(".part")), Guard(part.parent)
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
            seen.resumable = resp.status_code == 206 or "bytes" in resp.headers.get("Accept-Ranges", "").lower()
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
            if total is not None and total > budget.ceiling:
                kept = f"{part.name} is left as it was" if part.exists() else "nothing was written"
                raise DownloadError(f"{url}: the server announces {total} bytes ({human(total)}), more than the size "
                                    f"cap ({budget.ceiling_said}); {kept}: check the URL or raise the cap")
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
                ensure_room(part.parent, expected - offset, str(dest), DownloadError,
                            f"{'nothing was written' if not offset else part.name + ' is kept'}: free space or "
                            "choose another -o")
            bar.begin(offset, expected)
            before, lost = offset, None
            # read1 hands over every byte that arrived before a cut (iter_content drops the
            # last partial chunk), so a resume never fetches a byte twice.
            read = resp.raw.read1 if hasattr(resp.raw, "read1") else resp.raw.read
            # No fsync: a file torn by a power cut fails the hash check on the next run and
            # is fetched again, and skipping it keeps a 4 GB image at curl's speed.
            # Unbuffered: the .part always holds every byte hashed so far, so what a signal or a
            # kill leaves is exactly what a resume may count on (no tail lost in a user-space buffer).
            with open(part, "ab" if offset else "wb", buffering=0) as fh, _Hasher(digest) as hasher:
                while True:
                    try:
                        chunk = read(CHUNK, decode_content=False)
                    except (urllib3.exceptions.HTTPError, OSError) as exc:  # cut, reset, stall
                        lost = exc
                        break
                    if not chunk:
                        break
                    if offset + len(chunk) > cap:
                        fh.close()
                        bar.close(offset)
                        raise _over_cap(url, part, cap, expected, budget)
                    low = guard.allow(len(chunk))
                    if low is not None:  # the next chunk would cross the reserve: stop, free what we took
                        fh.close()
                        part.unlink(missing_ok=True)
                        bar.close(offset)
                        raise DownloadError(f"{dest}: stopped after {offset} bytes written ({human(offset)}): "
                                            f"{low.said()}; {part.name} was removed: free space or choose another -o")
                    view = memoryview(chunk)
                    while view:  # a raw write may take part of a chunk
                        view = view[fh.write(view) or 0:]
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
