"""VM disks and image guests keep the free-space reserve: refused up front, a sparse disk warned about."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_doit
from smallfs import free_bytes, small_fs


@pytest.fixture
def small_root(tmp_path):
    """The recipe's [host] root (and so every VM folder) on a 64 MiB filesystem."""
    with small_fs(tmp_path / "root", 64) as folder:
        yield folder


def write_recipe(folder: Path, vm: str) -> Path:
    path = folder / "r.toml"
    path.write_text(f'[host]\nroot = "root"\n[kernel]\nversion = "6.10.5"\n'
                    f'[[vms]]\nname = "g"\naccel = "tcg"\nmemory = "512M"\nvnc = {{ enabled = false }}\n{vm}')
    return path


def test_preallocated_disk_over_the_reserve_is_refused(small_root, tmp_path):
    path = write_recipe(tmp_path, 'disk = { size = "128M", preallocation = "falloc" }\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    folder = small_root / "var/lib/lfspass/vms/g"
    assert_one_error_line(proc, f"{folder}/g.qcow2 (128M, preallocation=falloc): needs 128.", f"{folder} has",
                          "3.2 MiB of it free", "make", "disk.size smaller")
    assert not list(folder.glob("*.qcow2")) and not list(folder.glob(".g.qcow2*"))
    path.write_text(path.read_text().replace('"128M"', '"16M"'))  # one that fits is taken whole now
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (folder / "g.qcow2").stat().st_blocks * 512 >= 16 << 20


def test_sparse_disk_larger_than_the_filesystem_is_made_with_a_warning(small_root, tmp_path):
    path = write_recipe(tmp_path, 'disk = { size = "64G" }\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    disk = small_root / "var/lib/lfspass/vms/g/g.qcow2"
    warning = next(line for line in proc.stderr.splitlines() if line.startswith("warning:"))
    assert f"{disk}: a sparse 64G disk" in warning and "3.2 MiB kept as the reserve" in warning, warning
    assert re.search(r"on a filesystem with 6\d\.\d MiB free", warning), warning   # the disk's size against what is free
    assert disk.stat().st_size < (1 << 20) and free_bytes(small_root) > 60 << 20  # sparse: nothing taken


def test_vars_copy_without_room_is_one_error_line(small_root, tmp_path):
    """The VM folder's filesystem filled to just under the reserve: the VARS copy is refused up front."""
    folder = small_root / "var/lib/lfspass/vms/g"
    folder.mkdir(parents=True)
    filler = small_root / "filler"
    with open(filler, "wb") as fh:   # bounded: at most the 64 MiB filesystem's free space, less 1 MiB
        fh.write(b"\0" * max(free_bytes(small_root) - (1 << 20), 0))
    path = write_recipe(tmp_path, 'disk = { size = "16M" }\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, f"{folder}/OVMF_VARS.fd (a copy of", "needs", "free space there")
    assert sorted(p.name for p in folder.iterdir()) == []
    filler.unlink()
    assert run_doit("vm", f"recipe={path}", cwd=tmp_path).returncode == 0
    assert (folder / "OVMF_VARS.fd").stat().st_size > 0

def test_vars_copy_hitting_enospc_is_one_error_line_and_nothing_half_written(tmp_path):
    """Bytes to spare but no room for one more file: the copy itself meets ENOSPC (no free-space
    check can see that coming).  One error line, no VARS, no temp file; then a rerun makes it."""
    with small_fs(tmp_path / "root", 64, inodes=64) as root:
        folder = root / "var/lib/lfspass/vms/g"
        folder.mkdir(parents=True)
        fillers = root / "fillers"
        fillers.mkdir()
        made = 0
        while made < 64:   # the filesystem has 64 names at most
            try:
                (fillers / str(made)).touch()
            except OSError:
                break
            made += 1
        assert made < 64 and free_bytes(root) > 60 << 20
        path = write_recipe(tmp_path, 'disk = { size = "16M" }\n')
        proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
        assert_one_error_line(proc, f"cannot make {folder}/OVMF_VARS.fd from", "No space left on device",
                              "nothing was kept")
        assert sorted(p.name for p in folder.iterdir()) == []
        for filler in fillers.iterdir():
            filler.unlink()
        assert run_doit("vm", f"recipe={path}", cwd=tmp_path).returncode == 0
        assert (folder / "OVMF_VARS.fd").stat().st_size > 0


def test_image_build_refused_before_mmdebstrap(small_root, tmp_path):
    """No room for an image build: one error before any package is fetched, nothing left behind."""
    path = write_recipe(tmp_path, 'disk = { size = "2G" }\ninstaller = { source = "image", mirror = '
                                  '"http://127.0.0.1:9/debian" }\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "g: an image guest build: needs 2.0 GiB but", f"{small_root}", "[vms] dir")
    folder = small_root / "var/lib/lfspass/vms/g"
    assert not (folder / ".image-build").exists() and not (folder / "image-build.log").exists()
    assert not list(folder.glob("*.qcow2")) and not list(folder.glob(".g.qcow2*"))


def test_firmware_larger_than_its_recipe_cap_is_refused(tmp_path):
    from lfspass.fsutil import sha256_file

    code, tmpl = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    path = write_recipe(tmp_path, f'[vms.firmware]\ncode_url = "file://{code}"\ncode_sha256 = "{sha256_file(code)}"\n'
                                  f'code_max_size = "1M"\nvars = "{tmpl}"\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path, env={"LFSPASS_CACHE": str(tmp_path / "cache")})
    assert_one_error_line(proc, f"{code.stat().st_size} bytes, more than the size cap",
                          f"{path}: vms[0].firmware.code_max_size = 1M", "nothing was copied")
    assert not list((tmp_path / "root/var/lib/lfspass/vms/g/firmware").glob("OVMF_CODE*"))


def test_a_disk_outside_the_root_is_made_where_the_recipe_says_and_named(tmp_path):
    """An absolute [[vms]] dir outside [host] root is allowed (the recipe names it) and listed in the output."""
    elsewhere = tmp_path / "elsewhere"
    path = write_recipe(tmp_path, f'dir = "{elsewhere}"\ndisk = {{ size = "16M" }}\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = (tmp_path / "root").resolve()
    for key, where in (("dir", elsewhere), ("disk.path", elsewhere / "g.qcow2")):
        assert f"{where}: outside the install root {root}, as {path}: vms[0].{key} says" in proc.stdout, \
            proc.stdout
    assert (elsewhere / "g.qcow2").is_file() and not (root / "var/lib/lfspass/vms/g").exists()
