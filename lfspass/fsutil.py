"""Atomic, change-only file writes and small filesystem helpers."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO
from collections.abc import Callable, Iterator

from lfspass.errors import HostError, InputError


def check_writable(path: Path) -> None:
    """Fail early, with a fix, when ``path``'s folder cannot be created or written."""
    parent = path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write {path}: {probe} is not writable; "
            "choose another install root ([host] root) or run with the needed rights"
        )


def _unwritable(path: Path, exc: OSError) -> InputError:
    return InputError(f"cannot write {path}: {exc.strerror or exc}; choose a writable install root "
                        "([host] root in the recipe) or fix the folder's permissions")


def _replace(path: Path, fill: Callable[[BinaryIO], None], mode: int) -> None:
    """Fill a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A reader sees the old file or the new one, never a half-written one; on any
    failure the temporary file is removed and ``path`` is left as it was.
    """
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritable(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def beneath(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Where a write to ``path`` lands with its links followed, spelled below ``root``; a HostError
    naming the link when that place is outside ``root``.  A path outside ``root`` to begin with is
    one the recipe named there (an absolute VM disk path): it is returned as it is."""
    top, lexical = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    if lexical != top and top not in lexical.parents:
        return lexical
    real_top = Path(os.path.realpath(top))
    real = _lands_inside(real_top, lexical)
    if real is not None:
        return top / real.relative_to(real_top)
    below = [p for p in (*reversed(lexical.parents), lexical) if top in p.parents]
    link = next((p for p in below if p.is_symlink() and _lands_inside(real_top, p) is None), lexical)
    raise HostError(f"{lexical}: the link {link} leads to {os.path.realpath(link)}, outside the install root {top}; "
                    "nothing was written: point the link inside the root or remove it, then re-run")


def _lands_inside(real_top: Path, path: Path) -> Path | None:
    """``path`` with every link followed, when that is ``real_top`` or below it; else None."""
    real = Path(os.path.realpath(path))
    return real if real == real_top or real_top in real.parents else None


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> bool:
    """Write ``data`` to ``path`` only if it differs; return True when the file changed.

    An unchanged file keeps its mtime (doit and make rely on it).  A new file gets
    ``mode`` or 0644; a replaced one keeps its mode unless ``mode`` is given.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw and (mode is None or (path.stat().st_mode & 0o7777) == mode):
            return False
        mode = mode if mode is not None else path.stat().st_mode & 0o7777
    except (FileNotFoundError, NotADirectoryError):
        pass
    except IsADirectoryError:
        raise InputError(f"cannot write {path}: it is a folder; remove it or pick another path") from None

    def fill(fh: BinaryIO) -> None:
        fh.write(raw)

    _replace(path, fill, mode if mode is not None else 0o644)
    return True


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike, mode: int | None = None) -> bool:
    """Copy ``src`` to ``dst`` atomically when their contents differ; True when ``dst`` changed."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and sha256_file(src) == sha256_file(dst):
        return False

    def fill(fh: BinaryIO) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, fh, 1 << 20)

    _replace(dst, fill, mode if mode is not None else (src.stat().st_mode & 0o7777))
    return True


def cache_dir(*parts: str) -> Path:
    """lfspass's one cache folder (or a folder inside it): $LFSPASS_CACHE, else
    $XDG_CACHE_HOME/lfspass, else ~/.cache/lfspass.  Downloads, kconfig builds and scans share it."""
    root = os.environ.get("LFSPASS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lfspass"
    return Path(root, *parts)


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def walk_tree(top: Path) -> Iterator[tuple[Path, bool]]:
    """(path, walked into) for every entry below ``top``, folder by folder in name order: each
    folder's files, then its subfolders; ``walked into`` is True for a real folder, False for a
    file, a link (a link to a folder is listed, never followed) or anything else."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath, name), False
        for name in dirnames:
            path = Path(dirpath, name)
            yield path, not path.is_symlink()


def require_tool(tool: str, package: str) -> str:
    """Return the path of ``tool`` or raise ToolMissing naming the Debian package."""
    from lfspass.errors import ToolMissing

    found = shutil.which(tool)
    if not found:
        raise ToolMissing(tool, package)
    return found
