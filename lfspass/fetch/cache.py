"""The download cache: entries by sha256 that never share an inode with a file in use, and
cheap "still verified?" records (size, mtime, inode) for destinations."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from lfspass.diskspace import ensure_room, space
from lfspass.errors import DownloadError, LfspassError
from lfspass import fsutil
from lfspass.fsutil import write_atomic
from lfspass.fetch.transfer import hash_into

FICLONE = 0x40049409  # ioctl: share src's blocks copy-on-write (btrfs, xfs); writing either copies
COPY_LIMIT = 256 << 20  # a larger file on a file system without reflinks is recorded, not copied


def cache_root(cache_dir: Path | None = None) -> Path:
    """The download cache: the argument, else lfspass's cache folder (fsutil.cache_dir)."""
    return Path(cache_dir) if cache_dir is not None else fsutil.cache_dir()


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "dev": st.st_dev}


def _reflink(src: Path, dst: Path) -> bool:
    """``dst`` shares ``src``'s blocks copy-on-write, made atomically; False where unsupported."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
        os.replace(tmp, dst)
        return True
    except OSError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)  # copy_file_range / sendfile: in the kernel
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def store(path: Path, cached: Path) -> None:
    """Add the verified file ``path`` to the cache as ``cached`` (its sha256 name).

    A reflink where the file system has them (free, and a write to either side copies);
    else a copy for files up to COPY_LIMIT (firmware, checksum lists); else a record of
    ``path`` (``cached.ref``), which a later hit re-hashes while copying from.  Never a hard
    link: a write through one name would change the other.  A cache we cannot write only
    costs a later download.
    """
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        if cached.exists():
            return
        if _reflink(path, cached):
            return
        size = path.stat().st_size
        if size <= COPY_LIMIT:
            room = space(cached.parent)
            if room is None or size <= room.room:  # a full disk skips the cache, never the reserve
                _copy(path, cached)
            return
        write_atomic(cached.with_name(cached.name + ".ref"),
                     json.dumps({"path": str(path.absolute()), **_identity(path)}) + "\n")
    except (OSError, LfspassError):
        pass


def fill_from_cache(cached: Path, expected: str, dest: Path) -> bool:
    """Put a cached copy of ``expected`` at ``dest`` (hashed as it is copied); False on a miss.

    An entry that no longer hashes to its name (a damaged copy, a recorded file changed
    since) is dropped, and the caller downloads.
    """
    ref = cached.with_name(cached.name + ".ref")
    source = cached if cached.is_file() else None
    if source is None and ref.is_file():
        try:
            seen = json.loads(ref.read_text())
            source = Path(seen["path"])
            if {k: seen.get(k) for k in ("size", "mtime_ns", "inode", "dev")} != _identity(source):
                source = None  # changed or replaced since it verified: not worth hashing
        except (OSError, ValueError, KeyError, TypeError):
            source = None
        if source is None:
            ref.unlink(missing_ok=True)
            return False
    if source is None:
        return False
    if Path(source).absolute() == dest.absolute():
        return False
    ensure_room(dest.parent, Path(source).stat().st_size, str(dest), DownloadError,
                "nothing was copied from the cache: free space or choose another -o")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        digest = hashlib.sha256()
        hash_into(source, digest, tmp)
        if digest.hexdigest() != expected:
            with contextlib.suppress(OSError):
                (cached if source == cached else ref).unlink()
            return False
        os.replace(tmp, dest)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _stamp(dest: Path, cache_dir: Path | None = None) -> Path:
    """Where the cache remembers a verified destination (not beside it: that folder is the user's)."""
    key = hashlib.sha256(os.fsencode(Path(dest).absolute())).hexdigest()
    return cache_root(cache_dir) / "verified" / f"{key}.json"


def record_verified(dest: Path, sha: str, cache_dir: Path | None = None) -> None:
    """Remember that ``dest`` as it is now (size, mtime, inode) hashed to ``sha``."""
    try:
        write_atomic(_stamp(dest, cache_dir), json.dumps({"sha256": sha, **_identity(dest)}) + "\n")
    except (OSError, LfspassError):
        pass  # a folder we cannot write costs a re-hash next time, nothing else


def still_verified(dest: Path, sha: str | None = None, cache_dir: Path | None = None) -> bool:
    """True when ``dest`` is unchanged since it last verified (as ``sha`` when given); cheap: no hashing."""
    try:
        seen = json.loads(_stamp(dest, cache_dir).read_text())
        return (sha is None or seen.get("sha256") == sha) and all(seen.get(k) == v for k, v in _identity(dest).items())
    except (OSError, ValueError, AttributeError):
        return False
