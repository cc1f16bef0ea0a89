"""`lfspass groups` on kernel-shaped fixtures and this machine's /sys, checked against lspci."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_error_line, run_cli
from make_fixtures import build

from lfspass.host.read import Host, parse_resource
from lfspass.host.pciids import PciIds

FIXTURES = ("dl380", "dl380-iommu-off", "shared-group", "bench")
_LINE = re.compile(r"^(?P<addr>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?P<cls>.*) \[(?P<code>[0-9a-f]{4})\]: "
                   r"(?P<name>.*) \[(?P<id>[0-9a-f]{4}:[0-9a-f]{4})\](?: \(rev [0-9a-f]{2}\))?(?: \(prog-if .*\))?$")


@pytest.fixture(scope="session")
def hosts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hosts")
    return {name: build(name, base / name) for name in FIXTURES}


def groups_json(root: str | Path) -> dict:
    proc = run_cli("groups", "--host-root", str(root), "--json", check=True)
    return json.loads(proc.stdout)


def all_devices(data: dict) -> dict[str, dict]:
    devs = [d for g in data["groups"] for d in g["devices"]] + data["ungrouped"]
    return {d["address"]: d for d in devs}


def lspci(sysfs_bus_pci: Path) -> dict[str, dict]:
    """`lspci -nnk -D` read from a sysfs tree, names from pci.ids only (no udev hwdb)."""
    if not shutil.which("lspci"):
        pytest.fail("lspci missing: apt-get install pciutils")
    proc = subprocess.run(["lspci", "-O", f"sysfs.path={sysfs_bus_pci}", "-O", "hwdb.disable=1", "-nnk", "-D"],
                          capture_output=True, text=True, check=True)
    out: dict[str, dict] = {}
    cur: dict = {}
    for line in proc.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            cur = out.setdefault(m["addr"], {"class_name": m["cls"], "code": m["code"], "name": m["name"],
                                             "id": m["id"], "driver": None, "subsystem": None})
        elif line.startswith("\tKernel driver in use: "):
            cur["driver"] = line.split(": ", 1)[1]
        elif line.startswith("\tSubsystem: "):
            cur["subsystem"] = line.rsplit("[", 1)[1].rstrip("]")
        elif line and not line.startswith("\t"):
            raise AssertionError(f"unparsed lspci line: {line!r}")
    return out


def assert_agree(ours: dict[str, dict], theirs: dict[str, dict]) -> None:
    assert sorted(ours) == sorted(theirs)
    for addr, want in theirs.items():
        got = ours[addr]
        assert got["id"] == want["id"], addr
        assert got["class"][2:6] == want["code"], addr
        assert got["class_name"] == want["class_name"], addr
        assert got["name"] == want["name"], addr
        assert got["driver"] == want["driver"], addr
        if want["subsystem"]:
            assert got["subsystem"] == want["subsystem"], addr


@pytest.mark.parametrize("name", FIXTURES)
def test_lspci_reads_fixture_and_agrees(hosts, name):
    theirs = lspci(hosts[name] / "sys/bus/pci")
    assert theirs, "lspci found no devices in the fixture"
    assert_agree(all_devices(groups_json(hosts[name])), theirs)


def test_lspci_agrees_on_this_machine():
    present = sorted(p.name for p in Path("/sys/bus/pci/devices").glob("*"))
    if not present:
        pytest.skip("this machine shows no PCI device in /sys/bus/pci/devices: nothing to compare with lspci")
    theirs = lspci(Path("/sys/bus/pci"))
    assert sorted(theirs) == present, "lspci does not list every device in /sys/bus/pci/devices"
    ours = all_devices(groups_json("/"))
    assert_agree(ours, theirs)
    print(f"lfspass groups and lspci agree on this machine's {len(theirs)} PCI device(s)")


def test_shared_group_not_viable_names_companions(hosts):
    data = groups_json(hosts["shared-group"])
    group = next(g for g in data["groups"] if any(d["id"] == "10de:1b81" for d in g["devices"]))
    assert group["viable"] is False
    blockers = {b["address"]: b["driver"] for b in group["blockers"]}
    assert blockers == {"0000:02:00.1": "snd_hda_intel", "0000:03:00.0": "xhci_hcd"}
    text = run_cli("groups", "--host-root", str(hosts["shared-group"]), check=True).stdout
    line = next(line for line in text.splitlines() if line.startswith(f"IOMMU group {group['group']}:"))
    assert "not viable" in line and "03:00.0" in line and "xhci_hcd" in line and "snd_hda_intel" in line


def test_seed_group_59_holds_the_p10_alone(hosts):
    data = groups_json(hosts["dl380"])
    g59 = next(g for g in data["groups"] if g["group"] == 59)
    assert g59["viable"] is True
    assert [(d["address"], d["name"], d["driver"]) for d in g59["devices"]] == [
        ("0000:05:00.0", "NVIDIA Corporation GP102GL [Tesla P10]", "vfio-pci")]
    # bridges on pcieport do not block a group
    assert next(g for g in data["groups"] if g["group"] == 2)["viable"] is True


def test_iommu_off_lists_devices_without_groups(hosts):
    proc = run_cli("groups", "--host-root", str(hosts["dl380-iommu-off"]), check=True)
    assert "IOMMU is off" in proc.stdout
    data = groups_json(hosts["dl380-iommu-off"])
    assert data["groups"] == [] and len(data["ungrouped"]) == 12


def test_missing_host_root_is_one_error_line(tmp_path):
    assert_one_error_line(run_cli("groups", "--host-root", str(tmp_path / "nope")), "--host-root", "nope")


def test_garbled_attributes_give_unknowns_not_tracebacks(hosts, tmp_path):
    root = tmp_path / "garbled"
    shutil.copytree(hosts["dl380"], root, symlinks=True)
    dev = root / "sys/devices/pci0000:00/0000:00:02.0/0000:05:00.0"
    (dev / "vendor").write_text("0x10d")            # cut short
    (dev / "class").write_bytes(b"\xff\xfe\x00garbage")
    (dev / "resource").write_text("0x0000000091000000 0x00")
    (dev / "numa_node").write_text("")
    (dev / "driver").unlink()
    (dev / "driver").symlink_to("../../../../bus/pci/drivers/nonexistent/../../../..")
    proc = run_cli("groups", "--host-root", str(root), "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    p10 = all_devices(json.loads(proc.stdout))["0000:05:00.0"]
    assert p10["id"] is None and p10["class"] is None and p10["numa_node"] is None


def test_links_never_escape_a_saved_root(hosts, tmp_path):
    root = tmp_path / "escape"
    shutil.copytree(hosts["dl380"], root, symlinks=True)
    link = root / "sys/bus/pci/devices/0000:05:00.0"
    link.unlink()
    link.symlink_to("/sys/bus/pci/devices/0000:00:00.0")     # absolute: would be the real /sys
    vendor = root / "sys/devices/pci0000:80/0000:80:02.0/0000:82:00.0/vendor"
    vendor.unlink()
    vendor.symlink_to("/proc/sys/kernel/osrelease")           # a planted attribute link
    host = Host(root)
    # clamped to <root>/sys/...: the fixture's own 00:00.0 (HPE subsystem), never this machine's
    moved = host.pci_device("0000:05:00.0")
    assert (moved.id, moved.subsystem_vendor) == ("8086:6f00", "103c")
    assert host.pci_device("0000:82:00.0").vendor is None


def test_resource_parsing():
    text = ("0x0000000091000000 0x0000000091ffffff 0x0000000000040200\n"
            "0x0000000000000000 0x00000007ffffffff 0x000000000014220c\n"
            "0x0000000000000000 0x0000000000000000 0x0000000000000000\n")
    bar0, bar1 = parse_resource(text)
    assert (bar0.size, bar0.is_mem, bar0.is_64, bar0.unassigned) == (16 << 20, True, False, False)
    assert (bar1.index, bar1.size, bar1.is_64, bar1.prefetch, bar1.unassigned) == (1, 32 << 30, True, True, True)
    assert parse_resource(text[:50]) is None and parse_resource("") is None


def test_pci_ids_names():
    ids = PciIds()
    assert ids.device("10de", "1e37") == "TU102GL [Tesla T10 16GB / GRID RTX T10-2/T10-4/T10-8]"
    assert ids.long_name("10de", "1b39") == "NVIDIA Corporation GP102GL [Tesla P10]"
    assert ids.subsystem("10de", "1e37", "10de", "1370") == "Tesla T10 16GB"
    assert ids.class_name(0x030200) == "3D controller" and ids.class_name(0x040300) == "Audio device"
    assert ids.long_name("10de", "ffff") == "NVIDIA Corporation Device"


@pytest.mark.parametrize("name", ["dl380", "shared-group", "/"])
def test_saved_copy_reads_like_the_original(hosts, tmp_path, name):
    """lspci and lfspass read a `doctor --save` copy exactly as they read the host it came from."""
    from lfspass.host.save import save_host

    root = Path("/") if name == "/" else hosts[name]
    saved = save_host(Host(root), tmp_path / "saved")
    assert lspci(saved / "sys/bus/pci") == lspci(root / "sys/bus/pci")
    assert groups_json(saved)["groups"] == groups_json(root)["groups"]
