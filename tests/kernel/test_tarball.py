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
