"""`lfspass doctor` on the seed's DL380 fixtures, a shared group, broken inputs and this machine."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, assert_one_error_line, run_cli
from make_fixtures import build

from lfspass.doctor.run import STATUSES

FIXTURES = ("dl380", "dl380-p10-unassigned", "dl380-iommu-off", "shared-group")


@pytest.fixture(scope="session")
def hosts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("doctor-hosts")
    return {name: build(name, base / name) for name in FIXTURES}


@pytest.fixture(scope="session")
def p10_recipe(tmp_path_factory) -> Path:
    """The seed's recipe after the card swap: vfio.conf says 10de:1b39, QEMU still says 82:00.0."""
    path = tmp_path_factory.mktemp("recipes") / "seed-p10.toml"
    text = (REPO / "recipes/hpe-dl380-t10.toml").read_text()
    assert 'id = "10de:1e37"' in text
    path.write_text(text.replace('id = "10de:1e37"', 'id = "10de:1b39"').replace('name = "Tesla T10"', 'name = "Tesla P10"'))
    return path


def doctor(*args: str) -> tuple[int, dict[str, dict], str]:
    proc = run_cli("doctor", *args, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    checks = {c["id"]: c for c in data["checks"]}
    assert len(checks) == len(data["checks"]), "check ids must be unique"
    return proc.returncode, checks, proc.stderr


def test_seed_p10_moved_card_fails_naming_both_addresses(hosts, p10_recipe):
    proc = run_cli("doctor", "--host-root", str(hosts["dl380"]), "--recipe", str(p10_recipe))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "device-present[82:00.0]" in line)
    assert line.startswith("FAIL") and "05:00.0" in line and "82:00.0" in line and "10de:1b39" in line
    assert 'set address = "05:00.0"' in proc.stdout
    _code, checks, _ = doctor("--host-root", str(hosts["dl380"]), "--recipe", str(p10_recipe))
    bar = checks["p10-bar1[82:00.0]"]
    assert bar["status"] == "warn" and "32 GiB" in bar["detail"]
    for words in ("X-PciMmio64Mb", "host-phys-bits=on", "PCI Express 64-Bit BAR Support"):
        assert words in bar["fix"]
    assert checks["device-driver[82:00.0]"]["detail"].startswith("05:00.0")    # the checks follow the P10
    assert checks["device-group[82:00.0]"]["status"] == "pass"


def test_p10_unassigned_bar_and_rmrr(hosts, p10_recipe):
    code, checks, _ = doctor("--host-root", str(hosts["dl380-p10-unassigned"]), "--recipe", str(p10_recipe))
    assert code == 1
    assert checks["device-bars[82:00.0]"]["status"] == "fail"
    assert "BAR1 (32 GiB) unassigned" in checks["device-bars[82:00.0]"]["detail"]
    assert "64-Bit BAR Support" in checks["p10-bar1[82:00.0]"]["fix"]
    assert "conrep" in checks["p10-rmrr[82:00.0]"]["fix"]


def test_seed_t10_recipe_passes_with_warnings(hosts):
    code, checks, _ = doctor("--host-root", str(hosts["dl380"]), "--recipe", str(REPO / "recipes/hpe-dl380-t10.toml"))
    assert code == 0, [c for c in checks.values() if c["status"] == "fail"]
    assert checks["t10-bar1[82:00.0]"]["status"] == "pass"
    assert checks["cmdline-intel-iommu"]["status"] == "warn"          # INTEL_IOMMU_DEFAULT_ON=y in the seed
    assert "unknown parameter" in checks["cmdline-acs-override"]["detail"]
    assert checks["device-numa[82:00.0]"]["detail"] == "node 1"


def test_iommu_off_fixture(hosts):
    code, checks, _ = doctor("--host-root", str(hosts["dl380-iommu-off"]))
    assert code == 1
    assert checks["iommu"]["status"] == "fail" and "DMAR table" in checks["iommu"]["detail"]
    assert "intel_iommu=on" in checks["iommu"]["fix"]


def test_shared_group_names_companions(hosts, tmp_path):
    recipe = tmp_path / "desk.toml"
    recipe.write_text('[[devices]]\naddress = "02:00.0"\nid = "10de:1b81"\n')
    code, checks, _ = doctor("--host-root", str(hosts["shared-group"]), "--recipe", str(recipe))
    group = checks["device-group[02:00.0]"]
    assert code == 1 and group["status"] == "fail"
    assert "02:00.1" in group["detail"] and "snd_hda_intel" in group["detail"]
    assert "03:00.0" in group["detail"] and "xhci_hcd" in group["detail"]
    assert "vfio-pci ids=10de:10f0,10de:1b81" in group["fix"]


def test_shared_group_with_an_unreadable_companion_id(hosts, tmp_path):
    """The audio function's vendor file is cut short: the group check names it instead of crashing on its id."""
    root = tmp_path / "garbled-audio"
    shutil.copytree(hosts["shared-group"], root, symlinks=True)
    (root / "sys/devices/pci0000:00/0000:00:1c.0/0000:02:00.1/vendor").write_text("0x10")
    code, checks, _ = doctor("--host-root", str(root))
    group = checks["device-group[02:00.0]"]
    assert code == 1 and group["status"] == "fail"
    assert "02:00.1 Audio device [id unreadable] on snd_hda_intel" in group["detail"]
    assert "vfio-pci ids=10de:1b81; read the ids of 02:00.1 with lspci -nn" in group["fix"]


def test_this_machine_iommu_off():
    if any(Path("/sys/kernel/iommu_groups").glob("*")):
        pytest.skip("this machine has an IOMMU; the test is for hosts without one (CI)")
    proc = run_cli("doctor")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = next(line for line in proc.stdout.splitlines() if " iommu " in line)
    assert line.startswith("FAIL") and "IOMMU" in line
    assert "fix: enable VT-d" in proc.stdout


@pytest.mark.parametrize("name", FIXTURES)
def test_json_carries_every_check(hosts, p10_recipe, name):
    code, checks, _ = doctor("--host-root", str(hosts[name]), "--recipe", str(p10_recipe))
    assert len(checks) >= 6
    for cid, c in checks.items():
        assert set(c) == {"id", "status", "title", "detail", "fix"} and c["status"] in STATUSES
        assert c["detail"] and "\n" not in c["detail"] + c["fix"]
        if c["status"] in ("fail", "warn"):
            assert c["fix"], cid
    assert code == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


@pytest.mark.parametrize("name", ["dl380", "dl380-p10-unassigned", "shared-group", "/"])
def test_save_round_trip_gives_same_verdicts(hosts, p10_recipe, tmp_path, name):
    root = "/" if name == "/" else str(hosts[name])
    saved = tmp_path / "saved"
    code, before, err = doctor("--host-root", root, "--recipe", str(p10_recipe), "--save", str(saved))
    assert "saved" in err
    code2, after, _ = doctor("--host-root", str(saved), "--recipe", str(p10_recipe))
    assert (code2, after) == (code, before)
    # small, links kept as relative links, config space cut to the standard 256 bytes
    total = 0
    for base, _dirs, files in os.walk(saved):
        for f in files:
            p = Path(base, f)
            total += p.lstat().st_size
            if p.is_symlink():
                assert not os.readlink(p).startswith("/")
            elif f == "config":
                assert p.stat().st_size <= 256
    assert total < 2 << 20
    assert (saved / "sys/bus/pci/devices").is_dir()


def test_save_refuses_a_used_folder(hosts, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used/x").write_text("keep")
    proc = run_cli("doctor", "--host-root", str(hosts["dl380"]), "--save", str(tmp_path / "used"))
    assert_one_error_line(proc, "--save", "used")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["x"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_missing_root_and_broken_inputs(hosts, tmp_path):
    assert_one_error_line(run_cli("doctor", "--host-root", str(tmp_path / "gone")), "--host-root", "gone")
    (tmp_path / "empty").mkdir()
    assert_one_error_line(run_cli("doctor", "--host-root", str(tmp_path / "empty")), "not a host root")
    root = tmp_path / "broken"
    shutil.copytree(hosts["dl380"], root, symlinks=True)
    t10 = root / "sys/devices/pci0000:80/0000:80:02.0/0000:82:00.0"
    (t10 / "vendor").write_text("0x1")
    (t10 / "resource").write_text("0x00000000c1000000 0x00000000c1ff")
    (t10 / "numa_node").write_bytes(b"\x00\x01")
    (root / "dmesg.txt").unlink()
    (root / "proc/cpuinfo").write_text("processor : 0\n")
    _code, checks, _ = doctor("--host-root", str(root), "--recipe", str(REPO / "recipes/hpe-dl380-t10.toml"))
    for cid in ("device-present[82:00.0]", "device-bars[82:00.0]", "device-numa[82:00.0]", "irq-remap", "cpu-virt",
                "t10-bar1[82:00.0]"):
        assert checks[cid]["status"] == "unknown", cid


def test_cmdline_amd_iommu_on_is_invalid(hosts, tmp_path):
    root = tmp_path / "amd"
    shutil.copytree(hosts["shared-group"], root, symlinks=True)
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro amd_iommu=on iommu=pt\n")
    _, checks, _ = doctor("--host-root", str(root))
    assert checks["cmdline-amd-iommu"]["status"] == "warn" and "IVRS" in checks["cmdline-amd-iommu"]["fix"]
    assert "cmdline-intel-iommu" not in checks    # Debian's config leaves INTEL_IOMMU_DEFAULT_ON unset


def test_dmesg_refused_gives_unknown(tmp_path):
    """The real dmesg run as an unprivileged user under kernel.dmesg_restrict=1 is refused."""
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1" or not shutil.which("runuser") \
            or os.geteuid() != 0:
        pytest.skip("needs root, runuser and kernel.dmesg_restrict=1 to provoke a refused dmesg")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "dmesg").write_text(f"#!/bin/sh\nexec runuser -u nobody -- {shutil.which('dmesg')} \"$@\"\n")
    (bindir / "dmesg").chmod(0o755)
    proc = run_cli("doctor", "--json", env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert "Traceback" not in proc.stderr
    checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["irq-remap"]["status"] == "unknown" and "dmesg" in checks["irq-remap"]["detail"]


def test_lfspass_doctor_checks_hook(hosts, p10_recipe):
    """A plugin's lfspass_doctor_checks runs once host-wide and once per device; junk becomes 'unknown'."""
    from lfspass import hookimpl
    from lfspass.doctor.run import run_doctor
    from lfspass.model import Check
    from lfspass.host.read import Host
    from lfspass.plugins import get_plugin_manager
    from lfspass.recipe import load_recipe

    class Extra:
        @hookimpl
        def lfspass_pci_ids(self):
            return []          # claims nothing, so it sees every device

        @hookimpl
        def lfspass_doctor_checks(self, host, recipe, device):
            if device is None:
                return [Check("extra-host", "pass", "extra", f"{len(host.devices)} devices")]
            return [Check(f"extra[{device.address}]", "warn", "extra", f"owner {device.plugin}", "none"), "not a check"]

    pm = get_plugin_manager()
    pm.register(Extra(), name="extra")
    try:
        checks = {c.id: c for c in run_doctor(Host(hosts["dl380"]), load_recipe(p10_recipe), pm)}
    finally:
        pm.unregister(name="extra")
    assert checks["extra-host"].detail == "12 devices"
    assert checks["extra[0000:82:00.0]"].detail == "owner tesla_p10"    # the recipe's id picks the owner
    assert checks["plugin"].status == "unknown" and "not a check" in checks["plugin"].detail
    assert checks["p10-bar1[82:00.0]"].status == "warn"                 # the built-in P10 plugin ran too


def test_recipe_device_whose_ids_are_unreadable_is_unknown_not_present(hosts, tmp_path):
    """A recipe device given by address only, its vendor file cut short: never 'present ... is None'."""
    root = tmp_path / "garbled-card"
    shutil.copytree(hosts["shared-group"], root, symlinks=True)
    (root / "sys/devices/pci0000:00/0000:00:1c.0/0000:02:00.0/vendor").write_text("0x10")
    recipe = tmp_path / "by-address.toml"
    recipe.write_text('[[devices]]\naddress = "02:00.0"\n')
    _code, checks, _ = doctor("--host-root", str(root), "--recipe", str(recipe))
    present = checks["device-present[02:00.0]"]
    assert present["status"] == "unknown", present
    assert "unreadable" in present["detail"] and "None" not in present["detail"]
    driver = checks.get("device-driver[02:00.0]")
    assert driver is None or "ids=None" not in driver["fix"], driver
