"""The nested lab: the lab guest runs the VM launcher `doit vm` wrote, and its own guest must see edu."""
from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit
from lfspass.lab.nested.image import QEMU, TCG_MODULE, l2_archive, qemu_files, run_conf, shared_libraries
from lfspass.lab.nested.verdict import hugepage_figures, hugepages_used, l2_report, qemu_warnings

NESTED = REPO / "recipes" / "lab-nested.toml"
LAB_DIR = REPO / "build" / "lab-nested"


def test_nested_recipe_keeps_the_lab_kernel_and_boot():
    """One lab kernel config serves both modes: [kernel] and [boot] equal lab.toml's (one build folder)."""
    lab = tomllib.loads((REPO / "recipes" / "lab.toml").read_text())
    nested = tomllib.loads(NESTED.read_text())
    assert nested["kernel"] == lab["kernel"] and nested["boot"] == lab["boot"]
    assert nested["lab"]["nested"] is True and nested["vms"][0]["missing_devices"] == "error"
    assert nested["host"]["sysfs_root"] == "../build/lab-nested/host"  # where its lab boot saves L1's host


def test_qemu_files_are_what_the_loader_needs():
    files = qemu_files([])
    assert QEMU in files and TCG_MODULE in files and Path("/usr/share/seabios/bios-256k.bin") in files
    libs = shared_libraries(QEMU)
    assert any(p.name.startswith("ld-linux") for p in libs) and any(p.name.startswith("libglib-2.0") for p in libs)
    assert set(libs) <= set(files)


def test_l2_initramfs_is_reproducible_and_lists_devices():
    a, b = l2_archive(Path("/bin/busybox")).newc(), l2_archive(Path("/bin/busybox")).newc()
    assert a == b and b"lfspass-l2: pci" in a
    assert b"usr/local/sbin/lfspass-guest-check" in a and b"lfspass-guest-check: pci" in a   # the image guests' check
    assert "L2_APPEND='console=ttyS0 panic=-1'" in run_conf(Path("/x/lab-l2.sh"))


def test_l2_report_and_warnings_read_what_l1_sent(tmp_path):
    n = tmp_path / "nested"
    n.mkdir()
    (n / "l2.log").write_text("boot...\r\nlfspass-l2: up 3.5 s on 6.1.192\nlfspass-l2: pci 0000:01:00.0 0x1234:0x11e8 "
                              "class=0x00ff00 driver=none\nlfspass-guest-check: pci 0000:01:00.0 1234:11e8 class 00ff "
                              "driver none\nlfspass-guest-check: nvidia-smi not installed\nlfspass-guest-check: done\n"
                              "lfspass-l2: done\n")
    (n / "status").write_text("0\n")
    (n / "uptime").write_text("10.00 52.50\n")
    (n / "argv").write_text("qemu-system-x86_64\n-name\nlab-l2\n")
    (n / "qemu.err").write_text("qemu-system-x86_64: vfio: Cannot reset device 0000:00:01.0, no available reset "
                                "mechanism.\n" * 2)
    report = l2_report(tmp_path)
    assert report["saw_device"] and report["run_s"] == 42.5 and report["argv"][2] == "lab-l2"
    assert report["devices"][0] == {"address": "0000:01:00.0", "id": "1234:11e8", "class": "0x00ff00", "driver": None}
    assert report["guest_check"]["pci"] == [{"address": "0000:01:00.0", "id": "1234:11e8", "class": "00ff", "driver": None}]
    (n / "hugepages-before").write_text("HugePages_Total:      64\nHugePages_Free:       64\nHugePages_Rsvd:        0\n")
    (n / "hugepages-during").write_text("HugePages_Free:       64\nHugePages_Free:       21\nHugePages_Free:        3\n")
    (n / "hugepages-after").write_text("HugePages_Total:      64\nHugePages_Free:       64\n")
    hp = hugepage_figures(tmp_path, 64)
    assert hp == {"l2_pages": 64, "total": 64, "free_before": 64, "free_min_while_l2_ran": 3, "samples": 3, "free_after": 64}
    assert hugepages_used(hp)
    (n / "hugepages-during").write_text("HugePages_Free:       64\n")   # L2 never touched its pages
    assert not hugepages_used(hugepage_figures(tmp_path, 64))
    (warning,) = qemu_warnings(report["qemu_stderr"])
    assert warning["id"] == "qemu-reset" and warning["status"] == "warn" and "FLR" in warning["fix"]


def test_bios_firmware_launcher_has_no_pflash_and_valid_xml(tmp_path):
    """firmware.type = "bios" (the nested lab's L2): QEMU's own SeaBIOS, no VARS file, libvirt XML still valid."""
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(f'[host]\nroot = "{tmp_path}/root"\n[kernel]\nversion = "6.1.192"\n[[vms]]\nname = "b"\naccel = "tcg"\n'
                           'firmware = { type = "bios" }\nvnc = { enabled = false }\n')
    proc = run_doit("vm", f"recipe={recipe_file}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = tmp_path / "root/var/lib/lfspass/vms/b"
    script = (folder / "b.sh").read_text()
    assert "pflash" not in script and "-bios" not in script and not (folder / "OVMF_VARS.fd").exists()
    assert "<loader" not in (folder / "b.xml").read_text()
    assert subprocess.run(["virt-xml-validate", str(folder / "b.xml")], capture_output=True).returncode == 0


def test_not_a_nested_recipe_is_one_error_line():
    proc = run_doit("nested", cwd=REPO)
    assert_one_error_line(proc, "not a nested lab recipe", "lab-nested.toml")


# --- the real nested run (slow): lab boot -> vm -> L1 runs the launcher -> L2 reports -------------------

def _doit(*args: str, env: dict | None = None):
    # Its own doit database, so the default lab's runs never make this one look changed.
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    return run_doit(f"recipe={NESTED}", *args, cwd=LAB_DIR, env=env)


@pytest.mark.slow
def test_nested_lab_passes_the_device_to_the_second_guest():
    proc = _doit()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    launcher = LAB_DIR / "root/var/lib/lfspass/vms/lab-l2/lab-l2.sh"
    assert re.search(rf"nested: PASS: L2 saw 1234:11e8 at \S+ .*through {launcher.name}", proc.stdout), proc.stdout
    assert f"nested: L1 ran {launcher}: qemu-system-x86_64 " in proc.stdout
    v = json.loads((LAB_DIR / "nested" / "verdict.json").read_text())
    assert v["ok"] and v["l1"]["iommu_enabled"] and v["l1"]["driver"] == "vfio-pci"
    assert isinstance(v["l1"]["group"], int) and v["l1"]["id"] == "1234:11e8"
    argv = v["launcher"]["argv"]
    assert argv[0] == "/usr/bin/qemu-system-x86_64" or argv[0].endswith("qemu-system-x86_64")
    assert f"vfio-pci,host={v['l1']['device']},bus=rp1,addr=00.0" in argv
    assert v["l2"]["saw_device"] and v["l2"]["boot_s"] > 0
    # The lab plugin's device argument reached QEMU (L2 lists pci-testdev); its CPU flag stays out under TCG.
    assert v["plugins"]["in_argv"] and "pci-testdev" in argv
    assert any(d["id"] == "1b36:0005" for d in v["l2"]["devices"])
    assert "l3-cache=on" in v["plugins"]["cpu_flags"] and v["plugins"]["cpu_flags_used"] is False
    assert any(w["id"] == "qemu-reset" for w in v["qemu_warnings"]), v["qemu_stderr"]
    # L2's memory from 2M huge pages: reserved on L1's command line by the GRUB entry, taken while L2 ran.
    assert "hugepagesz=2M hugepages=64" in " ".join(v["l1"]["qemu"])
    assert any(a.startswith("memory-backend-memfd,") and "hugetlb=on,hugetlbsize=2M" in a for a in argv), argv
    hp = v["l2"]["hugepages"]
    assert hp["l2_pages"] == 64 and hp["total"] == 64 and hp["free_before"] == 64 and hp["samples"] > 0
    assert hp["free_min_while_l2_ran"] < 64, hp
    assert "nested: L2 ran from huge pages: L1's HugePages_Free 64 -> " in proc.stdout
    # The guest-side check in L2 lists the stand-in device, as an image guest's does.
    assert any(d["id"] == "1234:11e8" for d in v["l2"]["guest_check"]["pci"]), v["l2"]["guest_check"]
    # A second run would only boot: the lab boot, vm and the L1 image are all up to date.
    again = _doit("nested:image")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not [line for line in again.stdout.splitlines() if line.startswith(".  ")], again.stdout


@pytest.mark.slow
def test_nested_lab_fails_with_doctors_message_without_the_vfio_files():
    proc = _doit("vfio=off")
    line = assert_one_error_line(proc, "nested lab failed in the lab guest", "vfio-pci")
    assert "QEMU" not in line.split("vfio-pci")[0]
    v = json.loads((LAB_DIR / "nested-no-vfio" / "verdict.json").read_text())
    assert not v["ok"] and v["l1"]["driver"] != "vfio-pci"


@pytest.mark.slow
def test_nested_lab_rejected_plugin_argument_fails_with_qemus_message():
    proc = _doit(env={"LFSPASS_LAB_DEVICE_ARG": "pci-testdev,no-such-prop=on"})
    assert_one_error_line(proc, "QEMU in the lab guest exited with status 1", "no-such-prop")


@pytest.mark.slow
def test_nested_lab_address_l1_lacks_fails_before_any_guest_boots(tmp_path):
    body = NESTED.read_text().replace("../build/lab-nested", str(LAB_DIR))
    body = body.replace('[[devices]]\nid = "1234:11e8"', '[[devices]]\naddress = "0000:00:1f.6"\nid = "1234:11e8"')
    body = body.replace('devices = ["1234:11e8"]', 'devices = ["0000:00:1f.6"]')
    recipe = tmp_path / "bad.toml"
    recipe.write_text(body.replace('build_dir = "../build/lab/kernel"', f'build_dir = "{REPO / "build/lab/kernel"}"'))
    if not (LAB_DIR / "host" / "sys").is_dir():  # run alone: the lab boot saves L1's host first
        first = _doit("lab")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    guest_log = LAB_DIR / "guest.log"
    before = guest_log.stat().st_mtime_ns
    proc = run_doit(f"recipe={recipe}", cwd=LAB_DIR)
    assert_one_error_line(proc, "0000:00:1f.6", "not a PCI device of the lab guest")
    assert guest_log.stat().st_mtime_ns == before
    assert not [line for line in proc.stdout.splitlines() if line.startswith(".  ")], proc.stdout
