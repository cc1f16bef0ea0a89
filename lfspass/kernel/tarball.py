"""Kernel release tarballs: what one is, its top Makefile, its size unpacked, members that would leave the
tree, the marker of a finished extraction."""
from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

from lfspass.errors import BuildError


def is_tarball(source: Path) -> bool:
    return source.is_file() and any(source.name.endswith(s) for s in (".tar", ".tar.xz", ".tar.gz", ".tar.bz2", ".tgz"))


def makefile_from_tarball(tarball: Path) -> tuple[str, str]:
    """(top folder, Makefile text) streamed out of a release tarball."""
    try:
        with tarfile.open(tarball, "r|*") as tf:
            for member in tf:
                parts = member.name.strip("./").split("/")
                if len(parts) == 2 and parts[1] == "Makefile" and member.isfile():
                    fh = tf.extractfile(member)
                    return parts[0], fh.read().decode(errors="replace") if fh else ""
    except (tarfile.TarError, EOFError, OSError) as exc:  # truncated, corrupt or not a tarball at all
        raise BuildError(f"[kernel] source = {str(tarball)!r}: not a readable tarball ({exc}); "
                         "download it again or point source at a kernel tree") from None
    raise BuildError(f"{tarball}: no top-level Makefile in the tarball; is it a Linux source release?")


def unpacked_size(tarball: Path) -> int:
    """What extracting ``tarball`` takes on disk, estimated without reading it through.

    The tar stream's length: a plain .tar's size, xz's index (``xz --robot --list``), gzip's
    trailer (the length mod 4 GiB, lifted back above the compressed size); else 10 times the
    compressed size (kernel sources shrink about 6x with gzip or bzip2).  Plus an eighth for
    block rounding: Debian's 6.1 tree is a 1.36 GB tar stream and takes 1.51 GB on ext4.
    """
    size = tarball.stat().st_size
    stream = size * 10
    if tarball.name.endswith(".tar"):
        stream = size
    elif tarball.name.endswith(".xz") and shutil.which("xz"):
        proc = subprocess.run(["xz", "--robot", "--list", str(tarball)], capture_output=True, text=True)
        totals = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith("totals\t")]
        if proc.returncode == 0 and totals and totals[0][4].isdigit():
            stream = int(totals[0][4])
    elif tarball.name.endswith((".gz", ".tgz")) and size >= 18:
        with open(tarball, "rb") as fh:
            fh.seek(-4, 2)
            stream = int.from_bytes(fh.read(4), "little")
        while stream < size:  # ISIZE wraps at 4 GiB
            stream += 1 << 32
    return stream + stream // 8


def unsafe_member(tarball: Path) -> str | None:
    """The first member that would land outside the tree, said as ``NAME: why``; None when there is none.

    An absolute name or a ``..`` in it is refused outright (GNU tar would strip or skip it and go
    on); links and the rest are judged by Python's own ``tarfile.data_filter`` (a link that is
    absolute or leads out of the tree, a device file).  A tarball Python cannot read is left to
    tar, whose message then says why.
    """
    try:
        with tarfile.open(tarball, "r|*") as tf:
            for member in tf:
                if member.name.startswith("/"):
                    return f"{member.name}: an absolute path"
                if ".." in member.name.split("/"):
                    return f"{member.name}: '..' in its path"
                try:
                    tarfile.data_filter(member, "/tree")
                except tarfile.FilterError as exc:
                    return f"{member.name}: {exc}"
    except (tarfile.TarError, OSError, EOFError):
        return None
    return None


def extraction_marker(tree: Path) -> Path:
    """The file that says ``tree`` was fully extracted, and from which tarball."""
    return tree.parent / f"{tree.name}.lfspass-source"
