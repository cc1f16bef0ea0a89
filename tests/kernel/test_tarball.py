"""Kernel tarball extraction keeps the free-space reserve: refused from its estimated size, or stopped."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lfspass.errors import BuildError
from lfspass.kernel.build import prepare_source
from lfspass.kernel.tarball import unpacked_size
from smallfs import free_bytes, small_fs

BIG = 100 << 20  # one member of zeros: tiny compressed, 100 MiB extracted


def _tarball(tmp_path: Path, flag: str, suffix: str) -> Path:
    pkg = tmp_path / "pkg" / "linux-x"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 2\nEXTRAVERSION =\n")
    (pkg / "Kconfig").write_text("")
    with open(pkg / "big", "wb") as fh:
        fh.truncate(BIG)  # sparse here; tar stores (and extracts) it as 100 MiB of zeros
    tarball = tmp_path / f"linux-x.{suffix}"
    subprocess.run(["tar", "-C", str(pkg.parent), flag, "-f", str(tarball), "linux-x"], check=True,
                   env=dict(os.environ, XZ_OPT="-0"))
    return tarball


@pytest.fixture
def small(tmp_path):
    with small_fs(tmp_path / "small", 64) as folder:
        yield folder


@pytest.mark.parametrize("flag, suffix", [("-cJ", "tar.xz"), ("-cz", "tar.gz"), ("-c", "tar")])
def test_extraction_estimated_over_the_reserve_is_refused(tmp_path, small, flag, suffix):
    tarball = _tarball(tmp_path, flag, suffix)
    assert BIG <= unpacked_size(tarball) <= BIG * 5 // 4  # xz's index, gzip's trailer, the tar's own size
    with pytest.raises(BuildError) as err:
        prepare_source(tarball, small / "build")
    line = err.value.one_line()
    assert f"kernel: extracting {tarball} into {small}/build/src: needs 112." in line, line
    assert "3.2 MiB of it free" in line and "[kernel] build_dir" in line, line
    assert not list((small / "build" / "src").iterdir())  # no tree, no .extract- folder


def test_extraction_the_estimate_misses_is_stopped_and_cleaned_up(tmp_path, small):
    """bzip2 says nothing of its length: the estimate (10x) lets it start, tar meets the full
    filesystem (or the watch stops it first), and nothing of it is left."""
    tarball = _tarball(tmp_path, "-cj", "tar.bz2")
    assert unpacked_size(tarball) < 64 << 20
    with pytest.raises(BuildError) as err:
        prepare_source(tarball, small / "build")
    line = err.value.one_line()
    assert str(tarball) in line and ("No space left" in line or "before the disk filled up" in line), line
    assert not list((small / "build" / "src").iterdir())
    assert free_bytes(small) > 60 << 20


# --- members that would leave the tree ----------------------------------------------------------

def _hostile(tmp_path: Path, kind: str) -> Path:
    """A small kernel-shaped tarball (gzip, written with Python's tarfile) with one bad member."""
    import io
    import tarfile

    tarball = tmp_path / f"linux-{kind}.tar.gz"

    def add(tf, name: str, data: bytes = b"", link: str = "", sym: bool = False) -> None:
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = (tarfile.SYMTYPE if sym else tarfile.LNKTYPE), link
        else:
            info.size = len(data)
        tf.addfile(info, io.BytesIO(data) if not link else None)

    with tarfile.open(tarball, "w:gz") as tf:
        add(tf, "linux-x/Makefile", b"VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 2\nEXTRAVERSION =\n")
        add(tf, "linux-x/Kconfig")
        bad = {"absolute": lambda: add(tf, "/tmp/lfspass-escaped", b"x"),
               "dotdot": lambda: add(tf, "linux-x/../../lfspass-escaped", b"x"),
               "symlink-out": lambda: add(tf, "linux-x/include/out", link="../../../etc", sym=True),
               "symlink-absolute": lambda: add(tf, "linux-x/out", link="/etc", sym=True),
               "hardlink-out": lambda: add(tf, "linux-x/hard", link="../outside")}
        bad[kind]()
    return tarball


@pytest.mark.parametrize(("kind", "member", "why"), [
    ("absolute", "/tmp/lfspass-escaped", "an absolute path"),
    ("dotdot", "linux-x/../../lfspass-escaped", "'..' in its path"),
    ("symlink-out", "linux-x/include/out", "outside the destination"),
    ("symlink-absolute", "linux-x/out", "absolute path"),
    ("hardlink-out", "linux-x/hard", "outside the destination"),
])
def test_a_member_that_would_leave_the_tree_is_refused(tmp_path, kind, member, why):
    from conftest import assert_one_error_line, run_doit
    from test_kernel_build import write_recipe

    tarball = _hostile(tmp_path, kind)
    build = tmp_path / "b"
    recipe = write_recipe(tmp_path / "r.toml", source=str(tarball), build_dir=build, root=tmp_path / "root")
    proc = run_doit(f"recipe={recipe}", "kernel", cwd=tmp_path)
    line = assert_one_error_line(proc, f"{tarball}: member {member}: ", why, "nothing was extracted")
    if kind == "dotdot":
        assert "(tar: Removing leading `linux-x/../../' from member names)" in line   # tar's own words, too
    assert sorted(p.name for p in (build / "src").iterdir()) == []          # no tree, no temporary folder
    assert not (tmp_path / "lfspass-escaped").exists() and not Path("/tmp/lfspass-escaped").exists()
