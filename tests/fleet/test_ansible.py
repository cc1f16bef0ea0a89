"""The Ansible role, run by real ansible-playbook on this machine (local connection, a folder root):
its install part renders the host's recipe from inventory values, installs the bundle, and a second
play reports no changes; a tampered bundle stops the play with the member named.  The reboot part
(`--tags boot`) needs hosts that reboot: the local connection refuses it by design."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli

pytest.importorskip("ansible", reason="the fleet extra: pip install -e '.[fleet]'")
pytestmark = pytest.mark.slow   # the bundle is the lab kernel's (built once a run)

PLAYBOOK = REPO / "ansible" / "rollout.yml"


@pytest.fixture(scope="module")
def bundle(lab_kernel, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    proc = run_cli("bundle", "--recipe", str(REPO / "recipes" / "lab.toml"), "--out", str(out), "--json", check=True)
    return Path(json.loads(proc.stdout)["path"])


def inventory(top: Path) -> Path:
    hosts = {}
    for name in ("gpu01", "gpu02"):
        hosts[name] = {
            "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": sys.executable,
            "lfspass_bin": str(Path(sys.executable).with_name("lfspass")),
            "lfspass_dir": str(top / name / "fleet"), "lfspass_root": str(top / name / "root"),
            "lfspass_boot": {"fs_uuid": "5e1f0c7a-1ab0-4c1b-9d2e-1ab000000001",
                             "root_partuuid": f"1ab00000-0000-4000-8000-00000000000{name[-1]}",
                             "cmdline": ["console=ttyS0"]},
            "lfspass_devices": [{"id": "1234:11e8", "name": "edu"}],
        }
    path = top / "inventory.json"    # JSON is YAML: ansible's yaml inventory plugin reads it
    path.write_text(json.dumps({"gpu_hosts": {"hosts": hosts}}))
    return path


def play(top: Path, bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_HOME=str(top / "ansible-home"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCAL_TEMP=str(top / "ansible-tmp"))
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory(top)), str(PLAYBOOK),
           "-e", f"bundle={bundle}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=top)


def recap(out: str) -> dict[str, dict[str, int]]:
    found = {}
    for host, fields in re.findall(r"^(\w+)\s+:\s+(ok=.*)$", out, re.M):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return found


def test_role_installs_the_bundle_and_a_second_play_changes_nothing(bundle, tmp_path) -> None:
    first = play(tmp_path, bundle, "--tags", "install")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    counts = recap(first.stdout)
    assert set(counts) == {"gpu01", "gpu02"} and all(c["changed"] >= 3 and c["failed"] == 0 for c in counts.values())
    release = re.fullmatch(r"lfspass-(.+)-[0-9a-f]{64}\.tar", bundle.name).group(1)
    for name in ("gpu01", "gpu02"):
        root = tmp_path / name / "root"
        cfg = (root / "boot/grub/grub.cfg").read_text()
        assert f"vmlinuz-{release}-lfs-12.2" in cfg and f"00000000000{name[-1]}" in cfg   # this host's PARTUUID
        assert "vfio-pci" in (root / "etc/modprobe.d/vfio.conf").read_text()
        assert oct((tmp_path / name / "fleet" / "recipe.toml").stat().st_mode & 0o777) == "0o600"
    second = play(tmp_path, bundle, "--tags", "install")
    assert second.returncode == 0, second.stdout[-4000:]
    assert all(c["changed"] == 0 for c in recap(second.stdout).values()), second.stdout[-3000:]


def test_tampered_bundle_stops_the_play_at_the_canary(bundle, tmp_path) -> None:
    import tarfile

    member = "modules/updates/lfspass_hello/lfspass_hello.ko"
    with tarfile.open(bundle) as tar:
        offset = tar.getmember(member).offset_data
    data = bytearray(bundle.read_bytes())
    data[offset + 3] ^= 0x80
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / bundle.name
    bad.write_bytes(bytes(data))
    proc = play(tmp_path, bad, "--tags", "install")
    assert proc.returncode != 0
    assert member in proc.stdout and "not installed" in proc.stdout
    counts = recap(proc.stdout)
    assert counts["gpu01"]["failed"] == 1 and "gpu02" not in counts     # serial 1 + max_fail 0: never reached
    assert not (tmp_path / "gpu01" / "root" / "boot").exists() and not (tmp_path / "gpu02").exists()


def test_the_playbook_passes_ansibles_syntax_check() -> None:
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "--syntax-check",
                           "-i", "localhost,", str(PLAYBOOK), "-e", "bundle=x"], capture_output=True, text=True,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
