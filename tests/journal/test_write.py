"""Every write lands below the install root: links planted under it cannot lead lfspass out of it.

The real tasks (`doit grub vfio`; `doit vm`'s VARS in tests/vm/test_vm_guard.py) on a folder
root with links in it, as a user (or an attacker with write access to that folder) could leave them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli, run_doit
from hostcases import write_case


def _outside(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder beside the root, with a file in it: what must stay as it is."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.conf").write_bytes(b"the host's own file\n")
    return out, {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.parametrize("link", ["etc/modprobe.d", "etc/sysconfig", "etc"])
def test_a_folder_link_out_of_the_root_is_refused(tmp_path: Path, link: str) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    out, before = _outside(tmp_path)
    (tmp_path / "root" / link).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "root" / link).symlink_to(out)
    proc = run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path)
    assert_one_error_line(proc, f"the link {tmp_path / 'root' / link}", f"leads to {out}", "outside the install root")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before     # nothing new, nothing changed


def test_an_absolute_link_to_the_host_is_refused(tmp_path: Path) -> None:
    """An LFS-style `lib -> /usr/lib` copied into a folder root points at this machine's own files."""
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/modprobe.d").symlink_to("/etc/modprobe.d")
    listing = sorted(os.listdir("/etc/modprobe.d"))
    proc = run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path)
    assert_one_error_line(proc, "leads to /etc/modprobe.d", "outside the install root")
    assert sorted(os.listdir("/etc/modprobe.d")) == listing


def test_a_linked_grub_cfg_inside_the_root_is_written_where_it_points(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    real = tmp_path / "root/boot/efi/EFI/lfs/grub.cfg"
    real.parent.mkdir(parents=True)
    real.write_text("# the user's own line\n")
    cfg = tmp_path / "root/boot/grub/grub.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.symlink_to("../efi/EFI/lfs/grub.cfg")
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert cfg.is_symlink() and os.readlink(cfg) == "../efi/EFI/lfs/grub.cfg"     # still the user's link
    text = real.read_text()
    assert text.startswith("# the user's own line\n") and "### BEGIN lfspass" in text
    runs = json.loads(run_cli("rollback", "--list", "--root", str(tmp_path / "root"), "--json").stdout)
    assert "boot/efi/EFI/lfs/grub.cfg" in [e["path"] for r in runs for e in r["entries"]]
    assert run_cli("rollback", "--root", str(tmp_path / "root")).returncode == 0
    assert real.read_text() == "# the user's own line\n" and cfg.is_symlink()


def test_a_grub_cfg_linked_out_of_the_root_is_refused(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    out, before = _outside(tmp_path)
    cfg = tmp_path / "root/boot/grub/grub.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.symlink_to(out / "keep.conf")
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert_one_error_line(proc, f"the link {cfg}", "outside the install root")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and cfg.is_symlink()
