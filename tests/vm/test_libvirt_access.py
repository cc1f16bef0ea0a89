"""[[vms]] libvirt = true: the VM folder libvirt's QEMU user may enter (0710, its group), and nobody else."""
from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from conftest import run_doit
from lfspass.errors import VmError
from lfspass.vm import libvirt_access


def _recipe(folder: Path, extra: str = "", libvirt: bool = True) -> Path:
    path = folder / "r.toml"
    path.write_text(f'[host]\nroot = "root"\n[kernel]\nversion = "6.10.5"\n[[vms]]\nname = "g"\naccel = "tcg"\n'
                    f'memory = "256M"\nvnc = {{ enabled = false }}\ndisk = {{ size = "16M" }}\n'
                    f'libvirt = {str(libvirt).lower()}\n{extra}')
    return path


@pytest.fixture
def qemu_group() -> int:
    try:
        pwd.getpwnam("libvirt-qemu")
        return grp.getgrnam("libvirt-qemu").gr_gid
    except KeyError:
        pytest.skip("no libvirt-qemu user here: apt-get install libvirt-daemon-system (.ci/install does)")


def test_new_folder_is_entered_by_libvirt_qemu_only(tmp_path, qemu_group):
    proc = run_doit("vm", f"recipe={_recipe(tmp_path)}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = tmp_path / "root/var/lib/lfspass/vms/g"
    st = folder.stat()
    assert stat.S_IMODE(st.st_mode) == 0o710 and st.st_gid == qemu_group and st.st_uid == os.geteuid()
    assert f"{folder}: 0710 root:libvirt-qemu" in proc.stdout
    for name in ("OVMF_VARS.fd", "g.qcow2"):   # libvirt's DAC driver hands them over while the guest runs
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    # pytest's temp folders are 0700: the first one libvirt-qemu cannot enter is named, with the way through.
    blocked = next(p for p in reversed(folder.parents) if not p.stat().st_mode & 0o001)
    warning = next(line for line in proc.stderr.splitlines() if line.startswith("warning:"))
    assert f"libvirt-qemu cannot enter {blocked} (" in warning and f"setfacl -m u:libvirt-qemu:x {blocked}" in warning
    again = run_doit("vm", f"recipe={_recipe(tmp_path, 'cpus = 1')}", cwd=tmp_path)   # relaunchers: kept, quiet
    assert again.returncode == 0 and "0710" not in again.stdout and stat.S_IMODE(folder.stat().st_mode) == 0o710


def test_existing_folder_is_left_as_it_is(tmp_path, qemu_group):
    folder = tmp_path / "root/var/lib/lfspass/vms/g"
    folder.mkdir(parents=True, mode=0o750)
    os.chmod(folder, 0o750)
    proc = run_doit("vm", f"recipe={_recipe(tmp_path)}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750 and folder.stat().st_gid != qemu_group
    assert "0710" not in proc.stdout


def test_without_libvirt_the_folder_stays_private_and_the_xml_says_why(tmp_path):
    proc = run_doit("vm", f"recipe={_recipe(tmp_path, libvirt=False)}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = tmp_path / "root/var/lib/lfspass/vms/g"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert "set libvirt = true in the recipe, or open the folder" in (folder / "g.xml").read_text()


def test_no_libvirt_user_is_one_error(tmp_path, monkeypatch):
    conf = tmp_path / "qemu.conf"
    conf.write_text('# a comment\nuser = "lfspass-no-such-user"\n#group = "nobody"\n')
    monkeypatch.setattr(libvirt_access, "QEMU_CONF", conf)
    assert libvirt_access.qemu_identity() == ("lfspass-no-such-user", "libvirt-qemu")
    with pytest.raises(VmError, match=r"no user 'lfspass-no-such-user'.*apt-get install libvirt-daemon-system"):
        libvirt_access.qemu_ids("vms[0].libvirt")
