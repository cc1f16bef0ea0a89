"""Verified downloads: stream to ``.part`` hashing in the same pass, resume, cache, signed sums."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import DownloadError
from .fsutil import sha256_file
from .progress import Progress
from .signature import parse_sums, verify_detached

CHUNK = 1 << 20  # big reads keep Python's per-chunk cost small next to curl
SMALL_LIMIT = 8 << 20  # a checksum list or signature larger than this is not one
DEFAULT_TIMEOUT = (15.0, 60.0)  # (connect, read) seconds; LFSPASS_TIMEOUT overrides
DEFAULT_RETRIES = 4  # LFSPASS_RETRIES overrides


@dataclass
class FetchResult:
    """What one fetch did: where the verified file is and how it got there."""

    path: Path
    sha256: str
    downloaded_bytes: int
    from_cache: bool
    resumed: bool


def cache_root(cache_dir: Path | None = None) -> Path:
    """The cache folder: the argument, else $LFSPASS_CACHE, else ~/.cache/lfspass."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("LFSPASS_CACHE") or Path.home() / ".cache" / "lfspass")


def _timeouts(timeout: float | tuple[float, float] | None) -> tuple[float, float]:
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


def _retries(retries: int | None) -> int:
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


def local_source(url: str) -> Path | None:
    """The path a 'URL' names when it is a local file (plain path or file://), else None."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("http", "https"):
        return None
    if "://" in url:
        raise DownloadError(f"{url}: unsupported scheme {parts.scheme!r}; use http(s)://, file:// or a local path")
    return Path(url)


def url_name(url: str) -> str:
    """The file name a URL (or path) ends in, e.g. for a SHA256SUMS lookup."""
    local = local_source(url)
    return local.name if local is not None else unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def read_small(session: requests.Session, url: str, timeouts: tuple[float, float]) -> bytes:
    """A checksum list or signature, from a URL or a local file."""
    local = local_source(url)
    try:
        if local is not None:
            return local.read_bytes()[:SMALL_LIMIT]
        with session.get(url, stream=True, timeout=timeouts) as resp:
            _check_status(url, resp)
            return resp.raw.read(SMALL_LIMIT)
    except FileNotFoundError:
        raise DownloadError(f"{url}: no such file; check the path") from None
    except (OSError, requests.RequestException) as exc:
        raise DownloadError(f"cannot read {url}: {_reason(exc)}; check the URL and the network") from None


def signed_sum(session: requests.Session, url: str, sums_url: str, signature_url: str | None,
               keyring: Path | None, fingerprint: str | None, timeouts: tuple[float, float]) -> str:
    """Verify SHA256SUMS with its signature first, then return the sum it gives for ``url``."""
    signature_url = signature_url or sums_url + ".sign"  # Debian's layout: SHA256SUMS.sign beside it
    with tempfile.TemporaryDirectory(prefix="lfspass-sums-") as tmp:
        sums, sig = Path(tmp, "SHA256SUMS"), Path(tmp, "SHA256SUMS.sign")
        sums.write_bytes(read_small(session, sums_url, timeouts))
        sig.write_bytes(read_small(session, signature_url, timeouts))
        verify_detached(sums, sig, keyring, fingerprint, what=sums_url)
        # Parse the very bytes gpgv checked, never a second copy.
        return parse_sums(sums.read_text(errors="replace"), url_name(url), source=sums_url)


def _check_status(url: str, resp: requests.Response) -> None:
    if resp.status_code >= 400:
        raise DownloadError(
            f"{url}: HTTP {resp.status_code} {resp.reason or ''}".rstrip()
            + "; check the URL (mirrors move old releases) and run again"
        )


def _reason(exc: BaseException) -> str:
    """The innermost useful words of a requests/urllib3 exception, on one line."""
    text = str(exc)
    m = re.search(r"\(Caused by \w+\((?:.*?: )?'?(.*?)'?\)\)", text)
    text = m.group(1) if m else text
    if "timed out" in text.lower():
        return "timed out (no data from the server)"
    return " ".join(text.split())[:200]


def _transfer(session: requests.Session, url: str, part: Path, timeouts: tuple[float, float],
              retries: int, bar: Progress) -> tuple[str, int, bool]:
    """Download ``url`` into ``part`` (continuing it if present); return (sha256, new bytes, resumed)."""
    digest, offset, resumed, downloaded, idle = hashlib.sha256(), 0, False, 0, 0
    if part.exists():
        offset = _hash_into(part, digest)  # the resumed file's hash must cover the old bytes too
    while True:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = session.get(url, headers=headers, stream=True, timeout=timeouts)
        except requests.RequestException as exc:
            raise DownloadError(f"cannot download {url}: {_reason(exc)}; check the URL and the network, then run again") from None
        with resp:
            if resp.status_code == 416 and offset:  # .part is already as long as the file, or longer
                part.unlink()
                digest, offset = hashlib.sha256(), 0
                continue
            _check_status(url, resp)
            start = _range_start(resp) if resp.status_code == 206 else 0
            if start != offset:  # server ignored Range (200) or answered another range: start over
                digest, offset = hashlib.sha256(), 0
            else:
                resumed = resumed or offset > 0
            length = resp.headers.get("Content-Length")
            bar.begin(offset, offset + int(length) if length and length.isdigit() else None)
            before, lost = offset, None
            # read1 hands over every byte that arrived before a cut (iter_content drops the
            # last partial chunk), so a resume never fetches a byte twice.
            read = resp.raw.read1 if hasattr(resp.raw, "read1") else resp.raw.read
            with open(part, "ab" if offset else "wb") as fh:
                while True:
                    try:
                        chunk = read(CHUNK, decode_content=False)
                    except (urllib3.exceptions.HTTPError, OSError) as exc:  # cut, reset, stall
                        lost = exc
                        break
                    if not chunk:
                        break
                    fh.write(chunk)
                    digest.update(chunk)
                    offset += len(chunk)
                    bar.update(offset)
                fh.flush()
                os.fsync(fh.fileno())
            downloaded += offset - before
            if lost is None:
                bar.close(offset)
                return digest.hexdigest(), downloaded, resumed
            # Resume while the link makes progress; give up after `retries` fruitless tries.
            idle = 0 if offset > before else idle + 1
            if idle > retries:
                bar.close(offset)
                raise DownloadError(
                    f"{url}: connection lost after {offset} bytes ({_reason(lost)}); "
                    f"{part.name} is kept: run again to resume"
                )


def _range_start(resp: requests.Response) -> int:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else -1


def _hash_into(path: Path, digest, out: Path | None = None, bar: Progress | None = None) -> int:
    """Feed ``path`` to ``digest`` (copying it to ``out`` when given); return its size."""
    size, buf = 0, bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as src, (open(out, "wb") if out else open(os.devnull, "wb")) as dst:
        while n := src.readinto(buf):
            digest.update(view[:n])
            if out:
                dst.write(view[:n])
            size += n
            if bar:
                bar.update(size)
    return size


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes at ``dst`` atomically: a hardlink when possible, else a copy."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links not allowed there
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(url: str, dest: Path, *, sha256: str | None = None, sums_url: str | None = None,
          signature_url: str | None = None, keyring: Path | None = None, fingerprint: str | None = None,
          cache_dir: Path | None = None, progress: bool | None = None,
          timeout: float | tuple[float, float] | None = None, retries: int | None = None) -> FetchResult:
    """Download ``url`` (or copy a local file) to ``dest``, verified by sha256 or signed SHA256SUMS.

    ``dest`` appears only once its hash matches; a mismatch deletes the download.  An
    interrupted download leaves ``dest.part`` and the next call resumes it.
    """
    dest = Path(dest)
    if (sha256 is None) == (sums_url is None):
        raise DownloadError(
            f"{url}: refusing an unverified download; pass --sha256 HEX or --sums URL (exactly one)"
            if sha256 is None else f"{url}: pass either --sha256 or --sums, not both"
        )
    if sums_url is None and (signature_url or keyring or fingerprint):
        raise DownloadError(f"{url}: --signature, --keyring and --fingerprint check a --sums list; pass --sums URL too")
    timeouts, tries = _timeouts(timeout), _retries(retries)
    with make_session(tries) as session:
        if sums_url is not None:
            expected = signed_sum(session, url, sums_url, signature_url, keyring, fingerprint, timeouts)
        else:
            expected = sha256.strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", expected):
                raise DownloadError(f"--sha256 {sha256!r} is not a sha256 (64 hex digits); copy it from the publisher's SHA256SUMS")
        cached = cache_root(cache_dir) / "sha256" / expected
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot create {dest.parent}: {exc.strerror}; choose another -o") from None
        if dest.is_file() and sha256_file(dest) == expected:
            _store(dest, cached)
            return FetchResult(dest, expected, 0, False, False)
        if cached.is_file():
            if sha256_file(cached) == expected:
                _link_or_copy(cached, dest)
                return FetchResult(dest, expected, 0, True, False)
            cached.unlink()  # damaged cache entry (e.g. a hardlinked copy was edited): fetch anew
        part = dest.with_name(dest.name + ".part")
        bar = Progress(dest.name, progress)
        local = local_source(url)
        try:
            if local is not None:
                if not local.is_file():
                    raise DownloadError(f"{url}: no such file; check the path")
                digest = hashlib.sha256()
                bar.begin(0, local.stat().st_size)
                got, downloaded, resumed = None, _hash_into(local, digest, part, bar), False
                got = digest.hexdigest()
                bar.close(downloaded)
            else:
                got, downloaded, resumed = _transfer(session, url, part, timeouts, tries, bar)
        except OSError as exc:  # the network's errors are handled inside; this is the disk
            raise DownloadError(f"{url} -> {part}: {exc.strerror}; free space or choose another -o") from None
    if got != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: sha256 mismatch: expected {expected}, got {got}; the download was deleted - "
            "if the file was updated upstream fix the recipe's sha256 (or sums), otherwise run again or use another mirror"
        )
    _store(part, cached)
    os.replace(part, dest)
    return FetchResult(dest, expected, downloaded, False, resumed)


def _store(path: Path, cached: Path) -> None:
    """Add a verified file to the cache; a cache we cannot write only costs a later download."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(path, cached)
    except OSError:
        pass
