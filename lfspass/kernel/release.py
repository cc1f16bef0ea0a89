"""Which kernel release a source builds (``make kernelrelease``), the one computation of it, cheaply and cached."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from lfspass.errors import BuildError, RecipeError
from lfspass.fsutil import write_atomic
from lfspass.kernel.tarball import extraction_marker, is_tarball, makefile_from_tarball

if TYPE_CHECKING:
    from lfspass.recipe import Recipe

_VAR = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)[ \t]*=[ \t]*(.*?)[ \t]*$", re.M)


def release_from_makefile(text: str, localversion: str = "") -> str:
    """``VERSION.PATCHLEVEL.SUBLEVEL EXTRAVERSION`` + local version, as ``make kernelrelease``."""
    found = dict(_VAR.findall(text))
    if "VERSION" not in found or "PATCHLEVEL" not in found:
        raise BuildError("kernel Makefile has no VERSION/PATCHLEVEL: is [kernel] source a Linux tree?")
    ver = f"{found['VERSION']}.{found['PATCHLEVEL']}"
    if found.get("SUBLEVEL", ""):
        ver += f".{found['SUBLEVEL']}"
    return ver + found.get("EXTRAVERSION", "") + localversion


def localversion_files(tree: Path) -> str:
    """What the tree's localversion* files add (scripts/setlocalversion: at the top of the tree, sorted)."""
    return "".join(p.read_text().strip() for p in sorted(tree.glob("localversion*")) if p.is_file())


def tree_release(tree: Path, localversion: str = "") -> str:
    """The release a kernel tree builds: its Makefile's version + its localversion* files + ``localversion``."""
    try:
        text = (tree / "Makefile").read_text()
    except OSError:
        raise BuildError(f"{tree}: no Makefile; [kernel] source must be a Linux tree or release tarball") from None
    return release_from_makefile(text, localversion_files(tree) + localversion)


def makefile_version(tree: Path) -> str:
    """``make kernelversion`` of a tree (6.12.57: no local version), '' when its Makefile names none."""
    try:
        return release_from_makefile((tree / "Makefile").read_text(errors="replace")[:4000])
    except (OSError, BuildError):
        return ""


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
    top, makefile = makefile_from_tarball(tarball)
    data = {"key": key, "top": top, "release": release_from_makefile(makefile)}
    write_atomic(cache, json.dumps(data, indent=1) + "\n")
    return data


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
        return tree_release(source, localversion)
    if is_tarball(source):
        info = tarball_info(source, cache_dir)
        # localversion* files would need a full pass over the tarball to find; once it is
        # extracted (kbuild.prepare_source) they are read from the tree, and the config
        # step stops with a "run again" when they change the release.
        tree = extracted_tree(source, cache_dir, info)
        return info["release"] + (localversion_files(tree) if tree else "") + localversion
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
