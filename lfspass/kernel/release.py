"""Kernel sources: where the tree is, and which release it builds, cheaply and cached."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from lfspass.errors import BuildError, RecipeError
from lfspass.fsutil import write_atomic

if TYPE_CHECKING:
    from lfspass.recipe import Recipe

_VAR = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)[ \t]*=[ \t]*(.*?)[ \t]*$", re.M)


def is_tarball(source: Path) -> bool:
    return source.is_file() and any(source.name.endswith(s) for s in (".tar", ".tar.xz", ".tar.gz", ".tar.bz2", ".tgz"))


def release_from_makefile(text: str, localversion: str = "") -> str:
    """``VERSION.PATCHLEVEL.SUBLEVEL EXTRAVERSION`` + local version, as ``make kernelrelease``."""
    found = dict(_VAR.findall(text))
    if "VERSION" not in found or "PATCHLEVEL" not in found:
        raise BuildError("kernel Makefile has no VERSION/PATCHLEVEL: is [kernel] source a Linux tree?")
    ver = f"{found['VERSION']}.{found['PATCHLEVEL']}"
    if found.get("SUBLEVEL", ""):
        ver += f".{found['SUBLEVEL']}"
    return ver + found.get("EXTRAVERSION", "") + localversion


def _localversion_files(tree: Path) -> str:
    # scripts/setlocalversion: localversion* files at the top of the tree, sorted.
    return "".join(p.read_text().strip() for p in sorted(tree.glob("localversion*")) if p.is_file())


def _makefile_from_tarball(tarball: Path) -> tuple[str, str]:
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


def tarball_info(tarball: Path, cache_dir: Path) -> dict:
    """Top folder and Makefile release of a tarball, cached by (path, size, mtime)."""
    st = tarball.stat()
    key = f"{tarball.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    cache = cache_dir / "source-info.json"
    try:
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return data
    except (OSError, ValueError):
        pass
    top, makefile = _makefile_from_tarball(tarball)
    data = {"key": key, "top": top, "release": release_from_makefile(makefile)}
    write_atomic(cache, json.dumps(data, indent=1) + "\n")
    return data


def extraction_marker(tree: Path) -> Path:
    """The file that says ``tree`` was fully extracted, and from which tarball."""
    return tree.parent / f"{tree.name}.lfspass-source"


def extracted_tree(tarball: Path, build_dir: Path, info: dict | None = None) -> Path | None:
    """``<build_dir>/src/<top>`` when it holds a finished extraction of this tarball, else None."""
    info = info or tarball_info(tarball, build_dir)
    tree = build_dir / "src" / info["top"]
    try:
        if json.loads(extraction_marker(tree).read_text()).get("key") == info["key"]:
            return tree
    except (OSError, ValueError):
        pass
    return None


def source_release(source: Path, cache_dir: Path, localversion: str = "") -> str:
    """The kernel release a source (tree folder or tarball) builds, without CONFIG_LOCALVERSION."""
    if source.is_dir():
        try:
            text = (source / "Makefile").read_text()
        except OSError:
            raise BuildError(f"{source}: no Makefile; [kernel] source must be a Linux tree or release tarball") from None
        return release_from_makefile(text, _localversion_files(source) + localversion)
    if is_tarball(source):
        info = tarball_info(source, cache_dir)
        # localversion* files would need a full pass over the tarball to find; once it is
        # extracted (kbuild.prepare_source) they are read from the tree, and the config
        # step stops with a "run again" when they change the release.
        tree = extracted_tree(source, cache_dir, info)
        return info["release"] + (_localversion_files(tree) if tree else "") + localversion
    raise BuildError(f"[kernel] source = {str(source)!r}: not a folder or a .tar(.xz|.gz|.bz2) file; "
                     "apt-get install linux-source-6.1 or point it at a kernel tree")


def kernel_release(recipe: Recipe) -> str:
    """The release the recipe's kernel builds: ``[kernel] version`` or the source's own."""
    if recipe.kernel.version:
        return recipe.kernel.version
    if not recipe.kernel.source:
        raise RecipeError(f"{recipe.path}: [kernel] needs 'source' (a tree or tarball to build) or "
                          "'version' (the release already installed below the root)")
    local = recipe.kernel.config.get("LOCALVERSION", "")
    return source_release(Path(recipe.kernel.source), Path(recipe.kernel.build_dir), local)
