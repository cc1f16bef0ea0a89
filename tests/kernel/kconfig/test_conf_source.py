"""A bare Kconfig folder's conf: where its sources come from, bounded, and nothing written without one."""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli
from lfspass.errors import KconfigError
from lfspass.kernel.kconfig import conf_source
from lfspass.kernel.release import makefile_version


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A Kconfig folder with no kernel tree around it; the conf comes from the host's linux-source."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Kconfig").write_text('config MODULES\n\tbool "modules"\n\tmodules\n'
                                  'config NR_CPUS\n\tint "CPUs"\n\trange 2 512\n\tdefault 64\n')
    (tmp_path / "base.config").write_text("CONFIG_MODULES=y\n")
    return tree


def test_leading_zero_refused_on_a_bare_folder(tiny: Path) -> None:
    cfg = tiny.parent / "config"
    cfg.write_text("CONFIG_MODULES=y\n")
    proc = run_cli("kconfig", "--tree", str(tiny), "--config", str(cfg), "--set", "NR_CPUS=0128")
    assert_one_error_line(proc, "NR_CPUS=0128 (from --set) refused: the kernel's conf says "
                          "\"symbol value '0128' invalid for NR_CPUS\"", "write 128")
    assert cfg.read_text() == "CONFIG_MODULES=y\n"


def test_no_kernel_source_anywhere_writes_nothing(tiny: Path) -> None:
    """No conf can be built: one error line, nothing written, no other engine's guess."""
    empty = tiny.parent / "no-sources"
    empty.mkdir()
    cfg = tiny.parent / "config"
    proc = run_cli("kconfig", "--tree", str(tiny), "--config", str(cfg), "--base", "alldefconfig",
                   env={"LFSPASS_CONF_SOURCE": str(empty)})
    assert_one_error_line(proc, "no kernel source to build the kernel's conf from", str(empty),
                          "give a kernel tree or a linux-source tarball")
    assert sorted(p.name for p in tiny.parent.iterdir()) == ["base.config", "no-sources", "tree"]
    proc = run_cli("kconfig", "--tree", str(tiny), "--config", str(cfg), "--conf-source", str(tiny / "nope.tar.xz"))
    assert_one_error_line(proc, "--conf-source", "no such kernel tree or source tarball")
    (empty / "linux-source-9.9.tar.xz").write_bytes(b"\xfd7zXZ\x00 not really xz" * 100)
    proc = run_cli("kconfig", "--tree", str(tiny), "--config", str(cfg), "--base", "alldefconfig",
                   env={"LFSPASS_CONF_SOURCE": str(empty), "XDG_CACHE_HOME": str(tiny.parent / "cache")})
    assert_one_error_line(proc, "linux-source-9.9.tar.xz: cannot read it as a source tarball")
    assert not cfg.exists() and not list((tiny.parent / "cache").rglob("Makefile"))


def test_conf_needs_its_build_tools(tiny: Path, linux_tree: Path) -> None:
    """conf not built yet and no flex/bison/gcc on PATH: one error line naming the tool."""
    bin_dir = tiny.parent / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").symlink_to(shutil.which("make"))
    cfg = tiny.parent / "config"
    proc = run_cli("kconfig", "--tree", str(tiny), "--config", str(cfg), "--base", "alldefconfig",
                   "--conf-source", str(linux_tree),
                   env={"PATH": str(bin_dir), "XDG_CACHE_HOME": str(tiny.parent / "cache")})
    assert_one_error_line(proc, f"cannot build the kernel's conf from {linux_tree.resolve()}", "'gcc' not found")
    assert not cfg.exists()


def _tarball(path: Path, members: dict[str, bytes], link: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    return path


def test_tarball_extraction_takes_only_what_conf_needs_and_is_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    members = {"linux-9.9/Makefile": b"VERSION = 9\nPATCHLEVEL = 9\n", "linux-9.9/scripts/kconfig/conf.c": b"x" * 600,
               "linux-9.9/arch/x86/Makefile": b"# x86\n", "linux-9.9/drivers/big.c": b"y" * 5000,
               "linux-9.9/scripts/../../escape": b"z"}
    src = conf_source.extract(_tarball(tmp_path / "linux-9.9.tar.gz", members, link="linux-9.9/scripts/evil"))
    got = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() or p.is_symlink())
    assert got == [".lfspass-conf-source", "Makefile", "arch/x86/Makefile", "scripts/kconfig/conf.c"]
    assert makefile_version(src) == "9.9" and not (tmp_path / "escape").exists()
    assert conf_source.extract(tmp_path / "linux-9.9.tar.gz") == src  # keyed by the tarball: once
    monkeypatch.setattr(conf_source, "_MAX_BYTES", 500)
    with pytest.raises(KconfigError, match=r"exceeds 0 MiB or 20000 files; not a Linux source tarball"):
        conf_source.extract(_tarball(tmp_path / "other.tar.gz", members))
    assert not list((tmp_path / "cache" / "lfspass" / "conf-source").glob("*.part"))
