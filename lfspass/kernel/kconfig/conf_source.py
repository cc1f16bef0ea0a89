"""Which kernel sources build the conf that reads a Kconfig folder outside a kernel tree.

A kernel tree is configured by its own conf (conf_runner.py).  A Kconfig folder is read by the conf
of: ``--conf-source`` / $LFSPASS_CONF_SOURCE (a kernel tree, a source tarball, or a folder
of ``linux-source-*.tar.xz``), else the kernel tree around the folder, else the newest
``/usr/src/linux-source-*.tar.xz`` (Debian's linux-source packages).  From a tarball only
what building conf needs (the top Makefile, scripts/, arch/*/Makefile*) is extracted, bounded,
into the cache, keyed by the tarball.  No source anywhere is an error: there is no other
engine to fall back to.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from pathlib import Path, PurePosixPath

from lfspass.errors import KconfigError
from lfspass.fsutil import cache_dir
from lfspass.kernel.tarball import is_tarball

ENV = "LFSPASS_CONF_SOURCE"
SEARCH = Path("/usr/src")
_DEBIAN = re.compile(r"^linux-source-(\d+(?:\.\d+)*)\.tar\.xz$")
# Building conf needs these; 7.2's are 3.4 MB in 5,800 files.  The bounds stop a tarball that
# is not what it claims from filling the cache.
_WANTED = re.compile(r"^(Makefile|scripts/.+|arch/[^/]+/Makefile[^/]*)$")
_MAX_BYTES, _MAX_FILES = 64 << 20, 20_000
_DONE = ".lfspass-conf-source"


def cache_root() -> Path:
    """lfspass's cache folder for kernel work (fsutil.cache_dir)."""
    return cache_dir()


def is_kernel_tree(path: Path) -> bool:
    return (path / "scripts" / "kconfig" / "conf.c").is_file() and (path / "Makefile").is_file()


def conf_kernel(folder: Path, given: str | Path | None = None) -> tuple[Path, str]:
    """(kernel tree to build conf from, how it was chosen) for a Kconfig folder that is no kernel tree."""
    if given:
        return _from(Path(given), f"--conf-source {given}"), f"--conf-source {given}"
    if env := os.environ.get(ENV):
        return _from(Path(env), f"{ENV}={env}"), f"{ENV}={env}"
    for cand in folder.parents:
        if is_kernel_tree(cand):
            return cand, f"the kernel tree around {folder}"
    return _from(SEARCH, str(SEARCH)), f"the newest {SEARCH}/linux-source-*.tar.xz"


def _from(path: Path, what: str) -> Path:
    if path.is_dir():
        if is_kernel_tree(path):
            return path.resolve()
        found = sorted((tuple(int(x) for x in m.group(1).split(".")), p) for p in path.iterdir()
                       if (m := _DEBIAN.match(p.name)) and p.is_file())
        if not found:
            hint = ("apt-get install linux-source (Debian), or pass --conf-source KERNEL_TREE|TARBALL "
                    f"(or set {ENV})" if path == SEARCH else "give a kernel tree or a linux-source tarball")
            raise KconfigError(f"no kernel source to build the kernel's conf from: {what} is not a kernel tree "
                               f"and holds no linux-source-*.tar.xz; {hint}; lfspass writes a .config only "
                               "through the kernel's own conf")
        path = found[-1][1]
    elif not is_tarball(path):
        raise KconfigError(f"{what}: no such kernel tree or source tarball; give a kernel tree, a "
                           "linux-*.tar.xz or a folder holding linux-source-*.tar.xz")
    return extract(path)


def extract(tarball: Path) -> Path:
    """The cache folder holding what building conf needs from ``tarball``, extracted once."""
    st = tarball.stat()
    key = hashlib.sha256(f"{tarball.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = cache_root() / "conf-source"
    dest = root / key
    if (dest / _DONE).is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another lfspass may be extracting the same tarball
        if (dest / _DONE).is_file():
            return dest
        work = root / f"{key}.part"
        shutil.rmtree(work, ignore_errors=True)
        # At most _MAX_BYTES are written (checked per member); the reserve must hold after them.
        from lfspass.diskspace import ensure_room
        ensure_room(root, _MAX_BYTES, f"the kconfig scripts of {tarball.name}", KconfigError)
        try:
            _extract_into(tarball, work)
            if not is_kernel_tree(work):
                raise KconfigError(f"{tarball}: no Makefile and scripts/kconfig/conf.c at its top; "
                                   "give a Linux source tarball or tree as --conf-source")
            (work / _DONE).write_text(f"{tarball.resolve()}\n")
            shutil.rmtree(dest, ignore_errors=True)
            work.rename(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _extract_into(tarball: Path, work: Path) -> None:
    """Stream ``tarball`` once; write its wanted regular files below ``work`` (no links, no escapes)."""
    import lzma   # here, not at the top: a kernel tree's configure never extracts
    import tarfile
    import zlib

    from lfspass.progress import Progress
    progress = Progress(f"extracting the kconfig scripts of {tarball.name} (once)", None)
    progress.begin(0, tarball.stat().st_size)
    total = count = 0
    try:
        with open(tarball, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
            for member in tf:
                progress.update(raw.tell())
                # The top folder's name varies (linux-source-6.12/, linux-7.2/): drop it.
                rel = PurePosixPath(*PurePosixPath(member.name).parts[1:])
                if not member.isreg() or not _WANTED.match(str(rel)) or ".." in rel.parts:
                    continue
                total, count = total + member.size, count + 1
                if total > _MAX_BYTES or count > _MAX_FILES:
                    raise KconfigError(f"{tarball}: what building conf needs exceeds {_MAX_BYTES >> 20} MiB "
                                       f"or {_MAX_FILES} files; not a Linux source tarball?")
                src = tf.extractfile(member)
                if src is None:
                    continue
                out = work / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "wb") as fh:
                    shutil.copyfileobj(src, fh)
                os.chmod(out, 0o755 if member.mode & 0o100 else 0o644)
            progress.close(raw.tell())
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        raise KconfigError(f"{tarball}: cannot read it as a source tarball ({exc}); "
                           "download it again or give a kernel tree as --conf-source") from None
