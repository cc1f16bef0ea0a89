"""The guest-side check: the script an image guest runs (here over the seed's recorded DL380 sysfs),
the report lfspass reads back from the serial line, and `lfspass doctor --guest`."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_cli
from fixture_data import dl380_devices
from make_fixtures import build
from lfspass.recipe import load_recipe
from lfspass.vm.image import guest_check
from lfspass.vm.install import marker_path
from lfspass.vm.plan import build_vm_plan

# What nvidia-smi -L prints for one card (its format: "GPU <n>: <name> (UUID: GPU-<uuid>)").
NVIDIA_L = "GPU 0: Tesla T10 (UUID: GPU-5a1e9bd2-0c6e-4c5e-8d1a-7f0b2c9e4a10)"


def run_script(host: Path, tmp: Path, path: str = "/usr/bin:/bin") -> tuple[str, str]:
    """The guest's script as written into the image, pointed at ``host``'s sysfs; (serial, saved report)."""
    text = guest_check.SCRIPT.replace("/sys/bus/pci/devices", f"{host}/sys/bus/pci/devices")
    text = text.replace("/var/lib/lfspass", str(tmp / "state")).replace("/dev/ttyS0", str(tmp / "serial"))
    script = tmp / "lfspass-guest-check"
    script.write_text(text)
    subprocess.run(["sh", str(script)], check=True, env={"PATH": path})
    return (tmp / "serial").read_text(), (tmp / "state/guest-check.txt").read_text()


def test_the_script_reports_every_device_of_the_recorded_dl380_with_its_driver(tmp_path: Path) -> None:
    host = build("dl380", tmp_path / "dl380")
    serial, saved = run_script(host, tmp_path)
    assert serial == saved
    report = guest_check.parse("[   12.3] random kernel line\n" + serial + "lfspass-first-boot: reached multi-user.target\n")
    assert report is not None
    want = [{"address": d.addr, "id": d.ids, "class": f"{d.cls:06x}"[:4], "driver": d.driver}
            for d in sorted(dl380_devices(), key=lambda d: d.addr)]
    assert report["pci"] == want
    t10 = next(d for d in report["pci"] if d["id"] == "10de:1e37")
    assert t10 == {"address": "0000:82:00.0", "id": "10de:1e37", "class": "0302", "driver": "vfio-pci"}
    assert report["nvidia_smi"] == {"installed": False, "exit": None, "lines": []}


def test_nvidia_smi_is_reported_when_it_is_installed(tmp_path: Path) -> None:
    host = build("dl380", tmp_path / "dl380")
    bindir = tmp_path / "bin"   # NVIDIA's userspace is not on this machine: its output, as the tool prints it
    bindir.mkdir()
    (bindir / "nvidia-smi").write_text(f"#!/bin/sh\necho '{NVIDIA_L}'\n")
    (bindir / "nvidia-smi").chmod(0o755)
    serial, _ = run_script(host, tmp_path, f"{bindir}:/usr/bin:/bin")
    assert guest_check.parse(serial)["nvidia_smi"] == {"installed": True, "exit": 0, "lines": [NVIDIA_L]}
    failing = ("lfspass-guest-check: nvidia-smi: NVIDIA-SMI has failed because it couldn't communicate with the "
               "NVIDIA driver.\nlfspass-guest-check: nvidia-smi exit 9\nlfspass-guest-check: done\n")
    report = guest_check.parse(failing)
    assert report["nvidia_smi"]["exit"] == 9
    assert "exited 9: the driver does not see a GPU" in guest_check.render("d2l", report)


def test_only_a_complete_report_counts_and_the_last_one_wins() -> None:
    first = "lfspass-guest-check: pci 0000:00:01.0 1234:1111 class 0300 driver bochs-drm\nlfspass-guest-check: nvidia-smi not installed\nlfspass-guest-check: done\n"
    second = "lfspass-guest-check: pci 0000:00:02.0 1af4:1041 class 0200 driver virtio-pci\nlfspass-guest-check: nvidia-smi not installed\nlfspass-guest-check: done\n"
    cut = "lfspass-guest-check: pci 0000:00:03.0 8086:10d3 class 0200 driver e1000e\n"
    assert guest_check.parse(first + second + cut)["pci"] == [
        {"address": "0000:00:02.0", "id": "1af4:1041", "class": "0200", "driver": "virtio-pci"}]
    assert guest_check.parse(cut) is None and guest_check.parse("") is None


# ---------------------------------------------------------------- lfspass doctor --guest
@pytest.fixture
def image_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.toml"
    path.write_text((REPO / "recipes/lab.toml").read_text()
                    .replace('root = "../build/lab/root"', f'root = "{tmp_path / "root"}"')
                    .replace('source = "external/', f'source = "{REPO}/recipes/external/'))
    return path


def _installed(recipe: Path, vm: str, **facts) -> Path:
    r = load_recipe(recipe)
    marker = marker_path(build_vm_plan(r, next(v for v in r.vms if v.name == vm)))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"vm": vm, "finished": "2026-12-04T19:00:00Z", **facts}))
    return marker


def test_doctor_guest_prints_the_report_installed_json_holds(tmp_path: Path, image_recipe: Path) -> None:
    host = build("dl380", tmp_path / "dl380")
    report = guest_check.parse(run_script(host, tmp_path)[0])
    _installed(image_recipe, "lab-image", guest_check=report)
    proc = run_cli("doctor", "--guest", "lab-image", "--recipe", str(image_recipe))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"guest lab-image: {len(report['pci'])} PCI device(s) seen by the guest at its check boot (2026-12-04T19:00:00Z)"
    assert "  0000:82:00.0  10de:1e37  class 0302  driver vfio-pci" in lines
    assert lines[-1].startswith("  nvidia-smi: not installed in the guest")
    js = run_cli("doctor", "--guest", "lab-image", "--recipe", str(image_recipe), "--json")
    assert js.returncode == 0 and json.loads(js.stdout)["guest_check"] == report


def test_doctor_guest_without_a_report_or_an_install_says_what_to_do(tmp_path: Path, image_recipe: Path) -> None:
    proc = run_cli("doctor", "--guest", "lab-image", "--recipe", str(image_recipe))
    assert_one_error_line(proc, "lab-image: not installed yet", "doit vm:install:lab-image")
    assert proc.returncode == 1
    _installed(image_recipe, "lab-image")   # an image from before the check
    old = run_cli("doctor", "--guest", "lab-image", "--recipe", str(image_recipe))
    assert old.returncode == 1 and "no guest-side report" in old.stdout
    unknown = run_cli("doctor", "--guest", "d2l", "--recipe", str(image_recipe))
    assert_one_error_line(unknown, "no VM named 'd2l'", "lab-guest, lab-image")
    assert_one_error_line(run_cli("doctor", "--guest", "lab-image"), "add --recipe PATH")
