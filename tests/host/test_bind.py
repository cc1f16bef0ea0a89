"""`lfspass bind` / `release` / `rollback` on kernel-shaped sysfs trees, the kernel's writes acted on by fakekernel.py.

The command line runs in its own process (fakecli.py: the real parser, errors and exit
codes, only the sysfs writer is the stand-in); lspci reads the tree afterwards to say which
driver each device is on, as it would on a live host.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_error_line
from make_fixtures import build

HERE = Path(__file__).resolve().parent
T10_HOST = {"0000:82:00.0": "nouveau", "0000:82:00.1": "snd_hda_intel"}


def run_fake(root: Path, *args: str, matches: dict | None = None, **spec) -> tuple[subprocess.CompletedProcess, list]:
    """``lfspass ARGS`` with the fake kernel on ``root``; (the process, the writes it made, in order)."""
    spec_path, log = root.parent / "spec.json", root.parent / "writes.json"
    log.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({"root": str(root), "matches": matches or T10_HOST, "log": str(log), **spec}))
    proc = subprocess.run([sys.executable, str(HERE / "fakecli.py"), str(spec_path), *args],
                          capture_output=True, text=True)
    return proc, json.loads(log.read_text()) if log.exists() else []


def drivers(root: Path) -> dict[str, str | None]:
    """address -> driver, as `lspci -k` reads the tree (lspci is the user's own check)."""
    proc = subprocess.run(["lspci", "-O", f"sysfs.path={root / 'sys/bus/pci'}", "-O", "hwdb.disable=1", "-Dk"],
                          capture_output=True, text=True, check=True)
    out: dict[str, str | None] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("\t"):
            current = line.split()[0]
            out[current] = None
        elif line.startswith("\tKernel driver in use: "):
            out[current] = line.split(": ", 1)[1]
    return out


def override(root: Path, address: str) -> str:
    return (root / "sys/bus/pci/devices" / address / "driver_override").read_text().strip()


@pytest.fixture
def t10(tmp_path: Path) -> Path:
    """The seed's DL380 with the T10 (and the audio function of its group) still on the host's drivers."""
    if not shutil.which("lspci"):
        pytest.fail("lspci missing: apt-get install pciutils")
    return build("dl380-t10-on-host", tmp_path / "dl380")


def test_bind_moves_the_whole_group_and_rollback_restores_the_drivers(t10: Path) -> None:
    """The acceptance line: `lfspass bind 82:00.0 --host-root` on the saved seed server, then `rollback`."""
    before = drivers(t10)
    proc, writes = run_fake(t10, "bind", "82:00.0", "--host-root", str(t10))
    assert proc.returncode == 0, proc.stderr
    now = drivers(t10)
    assert now["0000:82:00.0"] == now["0000:82:00.1"] == "vfio-pci"
    assert {a: d for a, d in now.items() if not a.startswith("0000:82:")} == \
        {a: d for a, d in before.items() if not a.startswith("0000:82:")}       # nothing else moved
    assert "82:00.0 3D controller [10de:1e37]: nouveau -> vfio-pci" in proc.stdout
    assert "82:00.1 Audio device [10de:10f7]: snd_hda_intel -> vfio-pci" in proc.stdout
    # The kernel's documented order, device by device.
    dev0 = "sys/devices/pci0000:80/0000:80:02.0/0000:82:00.0"
    assert writes[:3] == [[f"{dev0}/driver_override", "vfio-pci\n"], ["sys/bus/pci/drivers/nouveau/unbind", "0000:82:00.0"],
                          ["sys/bus/pci/drivers_probe", "0000:82:00.0"]]
    assert override(t10, "0000:82:00.0") == "vfio-pci"
    records = json.loads((t10 / "var/lib/lfspass/bound.json").read_text())["devices"]
    assert {a: r["driver"] for a, r in records.items()} == T10_HOST
    listing, _ = run_fake(t10, "rollback", "--list", "--root", str(t10))
    assert "sys/bus/pci/devices/0000:82:00.0" in listing.stdout and "sys/bus/pci/devices/0000:82:00.1" in listing.stdout

    back, writes = run_fake(t10, "rollback", "--root", str(t10))
    assert back.returncode == 0, back.stderr
    assert drivers(t10) == before
    assert override(t10, "0000:82:00.0") == override(t10, "0000:82:00.1") == "(null)"
    assert not (t10 / "var/lib/lfspass/bound.json").exists()
    assert ["sys/bus/pci/drivers/vfio-pci/unbind", "0000:82:00.0"] in writes


def test_release_gives_back_the_recorded_drivers(t10: Path) -> None:
    before = drivers(t10)
    assert run_fake(t10, "bind", "82:00.0", "--host-root", str(t10))[0].returncode == 0
    proc, writes = run_fake(t10, "release", "82:00.0", "--host-root", str(t10), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(d["address"], d["before"], d["after"]) for d in data["devices"]] == [
        ("0000:82:00.1", "vfio-pci", "snd_hda_intel"), ("0000:82:00.0", "vfio-pci", "nouveau")]  # reverse of bind
    assert drivers(t10) == before and override(t10, "0000:82:00.0") == "(null)"
    assert json.loads((t10 / "var/lib/lfspass/bound.json").read_text()) == {"devices": {}}
    again, writes = run_fake(t10, "release", "82:00.0", "--host-root", str(t10))
    assert again.returncode == 0 and writes == [] and "not on vfio-pci: left alone" in again.stdout


def test_probe_that_binds_no_driver_puts_everything_back(t10: Path) -> None:
    """vfio-pci's probe fails (as without an IOMMU: -EINVAL), so drivers_probe succeeds and leaves no driver."""
    before = drivers(t10)
    proc, _ = run_fake(t10, "bind", "82:00.0", "--host-root", str(t10), failing=["vfio-pci"])
    line = assert_one_error_line(proc, "82:00.0", "drivers_probe succeeded but left it on no driver",
                                 "put back 82:00.0 on nouveau")
    assert proc.returncode == 1, line
    assert drivers(t10) == before and override(t10, "0000:82:00.0") == "(null)"
    assert not (t10 / "var/lib/lfspass/bound.json").exists()
    listing, _ = run_fake(t10, "rollback", "--list", "--root", str(t10))
    assert "no journaled runs" in listing.stdout   # put back as it was: nothing left to undo


def test_write_failing_half_way_is_undone_in_reverse(t10: Path) -> None:
    before = drivers(t10)
    proc, writes = run_fake(t10, "bind", "82:00.0", "--host-root", str(t10),
                            fail=[["drivers/snd_hda_intel/unbind", "0000:82:00.1", errno.EIO]])
    assert_one_error_line(proc, "drivers/snd_hda_intel/unbind", "Input/output error",
                          "put back 82:00.1 on snd_hda_intel; put back 82:00.0 on nouveau")
    assert proc.returncode == 3
    assert drivers(t10) == before
    assert override(t10, "0000:82:00.0") == override(t10, "0000:82:00.1") == "(null)"
    failed_at = writes.index(["sys/bus/pci/drivers/snd_hda_intel/unbind", "0000:82:00.1"])
    undo = writes[failed_at + 1:]
    assert undo[0] == ["sys/devices/pci0000:80/0000:80:02.0/0000:82:00.1/driver_override", "\n"]  # newest first
    assert ["sys/bus/pci/drivers/vfio-pci/unbind", "0000:82:00.0"] in undo[1:]


def test_bind_killed_half_way_is_rolled_back(t10: Path) -> None:
    """SIGKILL between two writes: the journal entry was saved before the first, so rollback still works."""
    before = drivers(t10)
    proc, _ = run_fake(t10, "bind", "82:00.0", "--host-root", str(t10),
                       fail=[["drivers/snd_hda_intel/unbind", "0000:82:00.1", "kill"]])
    assert proc.returncode == 137
    assert drivers(t10)["0000:82:00.0"] == "vfio-pci" and override(t10, "0000:82:00.1") == "vfio-pci"
    back, _ = run_fake(t10, "rollback", "--root", str(t10))
    assert back.returncode == 0, back.stderr
    assert drivers(t10) == before
    assert override(t10, "0000:82:00.0") == override(t10, "0000:82:00.1") == "(null)"


def _process(root: Path, pid: int, comm: str, *nodes: str) -> None:
    proc = root / "proc" / str(pid)
    (proc / "fd").mkdir(parents=True)
    (proc / "comm").write_text(comm + "\n")
    for n, node in enumerate(nodes, start=3):
        os.symlink(node, proc / "fd" / str(n))


def test_nvidia_holders_refuse_the_bind_with_their_pids(t10: Path) -> None:
    matches = {"0000:82:00.0": "nvidia", "0000:82:00.1": "snd_hda_intel"}
    dev = t10 / "sys/bus/pci/devices/0000:82:00.0"
    (dev / "driver").unlink()
    (t10 / "sys/bus/pci/drivers/nouveau/0000:82:00.0").unlink()
    (t10 / "sys/bus/pci/drivers/nvidia").mkdir()
    os.symlink("../../../../bus/pci/drivers/nvidia", dev / "driver")
    _process(t10, 812, "nvidia-persistenced", "/dev/nvidiactl")
    _process(t10, 4711, "python3", "/dev/null", "/dev/nvidia0", "/dev/nvidia-uvm")
    _process(t10, 999, "bash", "/dev/pts/0")
    proc, writes = run_fake(t10, "bind", "82:00.0", "--host-root", str(t10), matches=matches)
    assert_one_error_line(proc, "cannot bind 0000:82:00.0 (on nvidia)", "PID 812 (nvidia-persistenced)",
                          "PID 4711 (python3) holds /dev/nvidia0", "systemctl stop nvidia-persistenced",
                          "nothing was changed")
    assert "999" not in proc.stderr and proc.returncode == 2 and writes == []


def test_release_refused_while_qemu_holds_the_group(t10: Path) -> None:
    assert run_fake(t10, "bind", "82:00.0", "--host-root", str(t10))[0].returncode == 0
    _process(t10, 3030, "qemu-system-x86", "/dev/vfio/vfio", "/dev/vfio/72")
    for args in (["release", "82:00.0", "--host-root", str(t10)], ["rollback", "--root", str(t10)]):
        proc, writes = run_fake(t10, *args)
        assert_one_error_line(proc, "in use", "PID 3030 (qemu-system-x86) holds /dev/vfio/72")
        assert writes == [] and drivers(t10)["0000:82:00.0"] == "vfio-pci"


@pytest.mark.parametrize("host, args, needles", [
    ("dl380", ["02:00.0"], ["IOMMU group 26 also holds 02:00.1 (Ethernet controller [14e4:1657]) on tg3",
                            "network controller"]),
    ("shared-group", ["02:00.0"], ["IOMMU group 8 also holds 03:00.0 (USB controller [1b21:1242]) on xhci_hcd",
                                   "serial-bus controller"]),
    ("dl380", ["80:02.0"], ["is a bridge"]),
    ("dl380-iommu-off", ["05:00.0"], ["has no IOMMU group"]),
    ("dl380", ["82:00.7"], ["no such PCI device"]),
])
def test_group_with_devices_the_host_needs_is_refused(tmp_path: Path, host: str, args: list, needles: list) -> None:
    root = build(host, tmp_path / host)
    proc, writes = run_fake(root, "bind", *args, "--host-root", str(root), matches={})
    assert_one_error_line(proc, *needles)
    assert proc.returncode == 2 and writes == [] and not (root / "var").exists()


def test_naming_the_whole_group_binds_it_and_leaves_the_bridges(tmp_path: Path) -> None:
    root = build("shared-group", tmp_path / "desk")
    matches = {"0000:02:00.1": "snd_hda_intel", "0000:03:00.0": "xhci_hcd"}
    proc, _ = run_fake(root, "bind", "02:00.0", "03:00.0", "--host-root", str(root), matches=matches)
    assert proc.returncode == 0, proc.stderr
    got = drivers(root)
    assert got["0000:02:00.1"] == got["0000:03:00.0"] == got["0000:02:00.0"] == "vfio-pci"
    assert got["0000:00:1c.0"] == got["0000:00:1c.4"] == "pcieport"
    assert "bridges left as they are: 00:1c.0, 00:1c.4" in proc.stdout
    assert "02:00.0 VGA compatible controller [10de:1b81]: stays on vfio-pci (already, not bound by lfspass" in proc.stdout


def test_release_of_a_device_bound_at_boot_reprobes(tmp_path: Path) -> None:
    """The P10 went to vfio-pci by boot-time ids, so nothing is recorded: release lets the kernel choose."""
    root = build("dl380", tmp_path / "dl380")
    proc, _ = run_fake(root, "release", "05:00.0", "--host-root", str(root), matches={"0000:05:00.0": "nouveau"})
    assert proc.returncode == 0, proc.stderr
    assert "05:00.0 3D controller [10de:1b39]: vfio-pci -> nouveau (no driver was recorded" in proc.stdout
    assert drivers(root)["0000:05:00.0"] == "nouveau"


def test_release_says_when_boot_ids_take_the_device_again(t10: Path) -> None:
    assert run_fake(t10, "bind", "82:00.0", "--host-root", str(t10))[0].returncode == 0
    proc, _ = run_fake(t10, "release", "82:00.0", "--host-root", str(t10), vfio_ids=["10de:1e37"])
    assert_one_error_line(proc, "82:00.0: vfio-pci took it again", "etc/modprobe.d/vfio.conf", "not the recorded nouveau")
    assert proc.returncode == 1
    assert drivers(t10)["0000:82:00.1"] == "snd_hda_intel"   # the rest of the group went back


def test_release_whose_write_fails_is_a_tool_failure_like_bind(t10: Path) -> None:
    """A sysfs write the kernel refuses exits 3 on release as on bind (not 1: no check said no)."""
    assert run_fake(t10, "bind", "82:00.0", "--host-root", str(t10))[0].returncode == 0
    proc, _ = run_fake(t10, "release", "82:00.0", "--host-root", str(t10),
                       fail=[["drivers/vfio-pci/unbind", "0000:82:00.1", errno.EIO]])
    assert_one_error_line(proc, "release: 82:00.1", "Input/output error", "put back 82:00.1 on vfio-pci")
    assert proc.returncode == 3
    assert drivers(t10)["0000:82:00.1"] == "vfio-pci"        # the failed one stays where it was


def test_saved_copy_without_a_live_sysfs_is_refused(tmp_path: Path) -> None:
    """The real writer on a `doctor --save` copy: refused before any write (no drivers_probe there)."""
    from conftest import run_cli

    root = build("dl380-t10-on-host", tmp_path / "saved")
    before = sorted(str(p) for p in root.rglob("*"))
    proc = run_cli("bind", "82:00.0", "--host-root", str(root))
    assert_one_error_line(proc, "not a live sysfs", "--host-root /")
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_devices_named_by_the_recipe(t10: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[host]\nsysfs_root = "{t10}"\n[[devices]]\nid = "10de:1e37"\nname = "Tesla T10"\n'
                      '[[devices]]\naddress = "05:00.0"\nname = "p10"\n')
    proc, _ = run_fake(t10, "bind", "Tesla T10", "--recipe", str(recipe), "--json")
    assert proc.returncode == 0, proc.stderr
    assert {d["address"] for d in json.loads(proc.stdout)["devices"]} == {"0000:82:00.0", "0000:82:00.1"}
    proc, _ = run_fake(t10, "release", "10de:1e37", "--recipe", str(recipe))
    assert proc.returncode == 0 and drivers(t10)["0000:82:00.0"] == "nouveau"
    for word, needle in (("10de:1b39", "has no [[devices]] entry with id 10de:1b39"), ("gpu", "not a PCI address")):
        proc, writes = run_fake(t10, "bind", word, "--recipe", str(recipe))
        assert_one_error_line(proc, needle)
        assert writes == []


def test_launchers_release_leaves_what_was_on_vfio_pci_before(tmp_path: Path) -> None:
    """`release --recorded` (the launcher's): the GTX 1070 was on vfio-pci before the bind and stays there."""
    root = build("shared-group", tmp_path / "desk")
    matches = {"0000:02:00.0": "nouveau", "0000:02:00.1": "snd_hda_intel", "0000:03:00.0": "xhci_hcd"}
    assert run_fake(root, "bind", "02:00.0", "03:00.0", "--host-root", str(root), matches=matches)[0].returncode == 0
    proc, _ = run_fake(root, "release", "--recorded", "02:00.0", "03:00.0", "--host-root", str(root), matches=matches)
    assert proc.returncode == 0, proc.stderr
    got = drivers(root)
    assert (got["0000:02:00.0"], got["0000:02:00.1"], got["0000:03:00.0"]) == ("vfio-pci", "snd_hda_intel", "xhci_hcd")
    assert "02:00.0 VGA compatible controller [10de:1b81]: stays on vfio-pci (not recorded at bind: left alone)" in proc.stdout
