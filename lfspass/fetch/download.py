"""Verified downloads: stream to ``.part`` hashing in the same pass, resume, cache, signed sums."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from lfspass.diskspace import ensure_room
from lfspass.errors import DownloadError, FetchRequestError
from lfspass.fsutil import sha256_file
from lfspass.progress import Progress

from lfspass.fetch.item import Download
from lfspass.fetch.cache import cache_root, fill_from_cache, record_verified, still_verified, store
from lfspass.fetch.signature import parse_sums, verify_detached
from lfspass.fetch.stop import signals_raise
from lfspass.fetch.limits import SMALL_LIMIT, Limits, max_size_from, retries_from, timeouts
from lfspass.fetch.transfer import check_status, hash_into, make_session, reason, transfer


@dataclass
class FetchResult:
    """What one fetch did: where the verified file is and how it got there."""

    path: Path
    sha256: str
    downloaded_bytes: int
    from_cache: bool
    resumed: bool


def local_source(url: str) -> Path | None:
    """The path a 'URL' names when it is a local file (plain path or file://), else None."""
    if not url or "\0" in url or any(ord(c) < 32 for c in url):
        raise FetchRequestError(f"{url!r}: not a URL or path (empty, or with control characters); check it")
    try:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise FetchRequestError(f"{url}: not a valid URL ({exc}); check the brackets and the port") from None
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise FetchRequestError(f"{url}: no host name; write http(s)://HOST/PATH")
        if any(c.isspace() for c in url):
            raise FetchRequestError(f"{url!r}: a URL has no spaces; write them as %20")
        return None
    if "://" in url:
        raise FetchRequestError(f"{url}: unsupported scheme {parts.scheme!r}; use http(s)://, file:// or a local path")
    return Path(url)


def url_name(url: str) -> str:
    """The file name a URL (or path) ends in, e.g. for a SHA256SUMS lookup."""
    local = local_source(url)
    return local.name if local is not None else unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def safe_name(url: str) -> str:
    """``url_name`` made one harmless path segment: a default file name for the current folder.

    ``%2F`` decodes to '/', so a name like ``..%2F..%2Fetc%2Fx`` must not become a path.
    """
    name = "".join("_" if c in "/\\" or ord(c) < 32 else c for c in url_name(url)).lstrip(".")
    while len(name.encode()) > 200:  # a file name may hold 255 bytes; leave room for .part and locks
        name = name[:-1]
    return name or "download"


def read_small(session: requests.Session, url: str, limits: tuple[float, float]) -> bytes:
    """A checksum list or signature, from a URL or a local file."""
    local = local_source(url)
    try:
        if local is not None:
            with open(local, "rb") as fh:
                data = fh.read(SMALL_LIMIT + 1)
        else:
            with session.get(url, stream=True, timeout=limits) as resp:
                check_status(url, resp)
                data = resp.raw.read(SMALL_LIMIT + 1)
    except FileNotFoundError:
        raise DownloadError(f"{url}: no such file; check the path") from None
    except (OSError, requests.RequestException) as exc:
        raise DownloadError(f"cannot read {url}: {reason(exc)}; check the URL and the network") from None
    if len(data) > SMALL_LIMIT:
        raise DownloadError(f"{url} is over {SMALL_LIMIT >> 20} MiB: not a checksum list or signature; check the URL")
    return data


def signed_sum(session: requests.Session, url: str, sums_url: str, signature_url: str | None,
               keyring: Path | None, fingerprint: str | None, limits: tuple[float, float]) -> str:
    """Verify SHA256SUMS with its signature first, then return the sum it gives for ``url``."""
    signature_url = signature_url or sums_url + ".sign"  # Debian's layout: SHA256SUMS.sign beside it
    with tempfile.TemporaryDirectory(prefix="lfspass-sums-") as tmp:
        sums, sig = Path(tmp, "SHA256SUMS"), Path(tmp, "SHA256SUMS.sign")
        sums.write_bytes(read_small(session, sums_url, limits))
        sig.write_bytes(read_small(session, signature_url, limits))
        verify_detached(sums, sig, keyring, fingerprint, what=sums_url)
        # Parse the very bytes gpgv checked, never a second copy.
        return parse_sums(sums.read_text(errors="replace"), url_name(url), source=sums_url)


def fetch_item(item: Download, *, cache_dir: Path | None = None, progress: bool | None = None,
               timeout: float | tuple[float, float] | None = None, retries: int | None = None) -> FetchResult:
    """``fetch`` of one planned download."""
    return fetch(item.url, item.dest, sha256=item.sha256, sums_url=item.sums_url, signature_url=item.signature_url,
                 keyring=item.keyring, fingerprint=item.fingerprint, cache_dir=cache_dir, progress=progress,
                 timeout=timeout, retries=retries, size=item.size, max_size=item.max_size,
                 max_size_key=item.max_size_key)


def fetch(url: str, dest: Path, *, sha256: str | None = None, sums_url: str | None = None,
          signature_url: str | None = None, keyring: Path | None = None, fingerprint: str | None = None,
          cache_dir: Path | None = None, progress: bool | None = None,
          timeout: float | tuple[float, float] | None = None, retries: int | None = None,
          size: int | None = None, max_size: str | int | None = None,
          max_size_key: str = "--max-size") -> FetchResult:
    """Download ``url`` (or copy a local file) to ``dest``, verified by sha256 or signed SHA256SUMS.

    ``dest`` appears only once its hash matches; a mismatch deletes the download.  An
    interrupted download leaves ``dest.part`` and the next call resumes it.  Two fetches to
    one ``dest`` take turns; the later one reuses the earlier one's file.  At most
    ``max_size`` bytes are written (named ``max_size_key`` in errors; default
    $LFSPASS_MAX_SIZE, else 16 GiB), and never past the free-space reserve (lfspass.diskspace).
    SHA256SUMS lists no sizes, so a download verified by one is bounded by its
    Content-Length and that cap.
    """
    dest = Path(dest)
    if (sha256 is None) == (sums_url is None):
        raise FetchRequestError(
            f"{url}: refusing an unverified download; pass --sha256 HEX or --sums URL (exactly one)"
            if sha256 is None else f"{url}: pass either --sha256 or --sums, not both"
        )
    if sums_url is None and (signature_url or keyring or fingerprint):
        raise FetchRequestError(f"{url}: --signature, --keyring and --fingerprint check a --sums list; pass --sums URL too")
    ceiling, ceiling_said = max_size_from(max_size, max_size_key)
    limits, budget = timeouts(timeout), Limits(retries_from(retries), ceiling, ceiling_said, size)
    local_source(url)  # a malformed URL fails here, before anything is written
    if str(dest) in ("", ".") or dest.is_dir():
        raise FetchRequestError(f"-o {str(dest)!r} is a folder, not a file name; give the file's path, e.g. -o "
                            f"{Path(dest, safe_name(url))}")
    tries = budget.retries
    # The small lists retry inside urllib3; the download itself counts every try in one
    # budget (transfer), so its session does not retry on its own.
    with make_session(tries) as session, make_session(0) as bare:
        if sums_url is not None:
            expected = signed_sum(session, url, sums_url, signature_url, keyring, fingerprint, limits)
        else:
            expected = (sha256 or "").strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", expected):
                raise FetchRequestError(f"--sha256 {sha256!r} is not a sha256 (64 hex digits); copy it from the publisher's SHA256SUMS")
        cached = cache_root(cache_dir) / "sha256" / expected
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot create {dest.parent}: {exc.strerror}; choose another -o") from None
        # SIGTERM unwinds too (Stopped), so no copy from the cache or .tmp is left behind.
        with _dest_lock(dest), signals_raise():
            return _fetch_to(bare, url, dest, expected, cached, progress, limits, budget)


def _fetch_to(session: requests.Session, url: str, dest: Path, expected: str, cached: Path,
              progress: bool | None, limits: tuple[float, float], budget: Limits) -> FetchResult:
    """The body of fetch() once the sum is known and ``dest`` is locked for this process."""
    root = cached.parent.parent
    if dest.is_file() and (still_verified(dest, expected, root) or sha256_file(dest) == expected):
        store(dest, cached)
        record_verified(dest, expected, root)
        return FetchResult(dest, expected, 0, False, False)
    if fill_from_cache(cached, expected, dest):
        record_verified(dest, expected, root)
        return FetchResult(dest, expected, 0, True, False)
    part = dest.with_name(dest.name + ".part")
    bar = Progress(dest.name, progress)
    local = local_source(url)
    try:
        if local is not None:
            if not local.is_file():
                what = "a folder, not a file" if local.is_dir() else "no such file"
                raise FetchRequestError(f"{url}: {what}; check the path")
            digest, have = hashlib.sha256(), local.stat().st_size
            if have > budget.ceiling:
                raise DownloadError(f"{url}: {have} bytes, more than the size cap ({budget.ceiling_said}); "
                                    "nothing was copied: check the path or raise the cap")
            ensure_room(part.parent, have, str(dest), DownloadError, "nothing was copied: free space or choose another -o")
            bar.begin(0, have)
            downloaded, resumed = hash_into(local, digest, part, bar), False
            got = digest.hexdigest()
            bar.close(downloaded)
        else:
            got, downloaded, resumed = transfer(session, url, part, limits, budget, bar)
    except OSError as exc:  # the network's errors are handled inside; this is the disk
        if exc.errno == errno.ENOSPC:  # filled by someone else meanwhile: give back what we took
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} -> {part}: {exc.strerror}; the partial file was removed: free space or "
                                "choose another -o") from None
        raise DownloadError(f"{url} -> {part}: {exc.strerror}; free space or choose another -o") from None
    if got != expected:
        part.unlink(missing_ok=True)
        advice = (f"the copy was deleted ({local} is left as it is) - check it is the right file"
                  if local is not None else
                  "the download was deleted - if the file was updated upstream fix the recipe's sha256 "
                  "(or sums), otherwise run again or use another mirror")
        raise DownloadError(f"{url}: sha256 mismatch: expected {expected}, got {got}; {advice}")
    os.replace(part, dest)
    record_verified(dest, expected, root)
    store(dest, cached)
    return FetchResult(dest, expected, downloaded, False, resumed)


@contextlib.contextmanager
def _dest_lock(dest: Path):
    """Hold ``.<name>.lock`` beside ``dest`` so two fetches of one file take turns.

    The second waits, then finds the first's verified file and downloads nothing; neither
    can append to the other's ``.part``.  The lock file is removed while still held, so a
    waiter that wakes on a removed file opens the new one and locks again.
    """
    lock, announced = dest.with_name(f".{dest.name}.lock"), False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if dest.is_file():  # a read-only folder that already holds it: check it, write nothing
                yield
                return
            raise DownloadError(f"cannot write {lock}: {exc.strerror}; choose another -o") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not announced:
                print(f"{dest}: another lfspass fetch is writing it; waiting", file=sys.stderr, flush=True)
                announced = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        try:
            now = os.stat(lock)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # the holder removed it as we waited: lock the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
