"""The runtime-bind lab: `lfspass bind` / `release` run inside the lab guest on QEMU's e1000e."""
from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit
from lfspass.lab.bind.image import PYTHON, bind_archive, lfspass_modules, python_files
from lfspass.lab.bind.verdict import EXPECT, judge, read_steps

BIND = REPO / "recipes" / "lab-bind.toml"
LAB_DIR = REPO / "build" / "lab-bind"
E1, E2, T = "0000:00:03.0", "0000:01:01.0", "0000:01:02.0"


def test_bind_recipe_is_the_lab_kernel_plus_e1000e_on_6_12_with_iommufd():
    """lab.toml's kernel with the e1000e driver and the network core it needs, in its own build folder,
    from Debian's 6.12 tree with the iommufd backend (IOMMUFD and the VFIO cdev, which 6.1 lacks)."""
    lab = tomllib.loads((REPO / "recipes" / "lab.toml").read_text())
    bind = tomllib.loads(BIND.read_text())
    added = {k: v for k, v in bind["kernel"]["config"].items() if k not in lab["kernel"]["config"]}
    assert added == {"NET": "y", "NETDEVICES": "y", "ETHERNET": "y", "NET_VENDOR_INTEL": "y", "E1000E": "y"}
    assert all(bind["kernel"]["config"][k] == v for k, v in lab["kernel"]["config"].items())
    assert bind["kernel"]["build_dir"] == "../build/lab-bind/kernel" != lab["kernel"]["build_dir"]
    own = ("config", "build_dir", "source", "vfio_backend", "external_modules")   # the hello module: the default lab loads it
    assert {k: v for k, v in bind["kernel"].items() if k not in own} == \
        {k: v for k, v in lab["kernel"].items() if k not in own}
    assert bind["kernel"]["source"] == "/usr/src/linux-source-6.12.tar.xz" != lab["kernel"]["source"]
    assert bind["kernel"]["vfio_backend"] == "iommufd" and "vfio_backend" not in lab["kernel"]
    assert bind["lab"]["bind"] is True and "initrd" not in bind["boot"]  # booted with -kernel
    assert [d["id"] for d in bind["devices"]] == ["1234:11e8"]        # e1000e is not bound at boot


def test_only_the_bind_part_of_lfspass_is_packed():
    mods = lfspass_modules()
    assert {"lfspass.cli.main", "lfspass.cli.bind", "lfspass.host.bind", "lfspass.host.bindplan",
            "lfspass.journal.sysfs", "lfspass.journal.holders"} <= set(mods)
    assert not [m for m in mods if m.split(".")[1:2] and m.split(".")[1] in ("doctor", "kernel", "vm", "lab", "boot")]
    files = python_files(mods)
    assert PYTHON in files and Path("/usr/lib/python3.11/os.py") in files
    assert any(p.name.startswith("ld-linux") for p in files) and any(p.name == "libc.so.6" for p in files)
    assert not [p for p in files if "/test/" in str(p) or "site-packages" in str(p)]


def test_packed_python_runs_lfspass_in_a_chroot(tmp_path):
    """The image's python3 and lfspass, alone in a root of their own: `lfspass release --help` and a refusal."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root = tmp_path / "root"
    (root / "lib/modules/6.1.0").mkdir(parents=True)
    arc = bind_archive(root, "6.1.0")
    assert "usr/bin/lfspass" in arc.entries and "nested.sh" in arc.entries and "opt/lfspass/pluggy/__init__.py" in arc.entries
    image = tmp_path / "image"
    image.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=arc.newc(), cwd=image, check=True)
    proc = subprocess.run(["chroot", str(image), "/usr/bin/lfspass", "release", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--recorded" in proc.stdout, proc.stderr
    proc = subprocess.run(["chroot", str(image), "/usr/bin/lfspass", "bind", "--host-root", "/nowhere", "00:01.0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --host-root /nowhere: no such folder"), proc.stderr


def _saved(tmp_path: Path, lines: list[str], outputs: dict[str, str]) -> Path:
    b = tmp_path / "bind"
    b.mkdir()
    (b / "devices.txt").write_text(f"devices e1000e={E1} group_e1000e={E2} group_testdev={T}\n"
                                   f"group {E1} 3\ngroup {E2} 4\ngroup {T} 4\n")
    (b / "steps.txt").write_text("".join(line + "\n" for line in lines))
    for name, text in outputs.items():
        (b / f"{name}.out").write_text(text)
    return tmp_path


def test_steps_are_read_and_judged(tmp_path):
    d = lambda a, b, c: f"{E1}={a} {E2}={b} {T}={c}"  # noqa: E731
    saved = _saved(tmp_path, [
        f"boot\t0\ttrue\t{d('e1000e', 'e1000e', 'none')}\teth0,eth1,lo",
        f"bind\t0\tlfspass bind {E1}\t{d('vfio-pci', 'e1000e', 'none')}\teth1,lo",
        f"cdev\t0\tsh -c ls\t{d('vfio-pci', 'e1000e', 'none')}\teth1,lo",
        f"release-held\t2\tlfspass release {E1}\t{d('vfio-pci', 'e1000e', 'none')}\teth1,lo",
        f"release\t0\tlfspass release {E1}\t{d('e1000e', 'e1000e', 'none')}\teth0,eth1,lo",
        f"group-refused\t0\tlfspass bind {T}\t{d('e1000e', 'vfio-pci', 'vfio-pci')}\teth0,lo",
    ], {"cdev": f"/sys/bus/pci/devices/{E1}/vfio-dev:\nvfio1\n\n/dev/vfio/devices:\nvfio0\nvfio1\n/dev/iommu",
        "release-held": "error: cannot release 0000:00:03.0 (on vfio-pci): it is in use: PID 77 (sleep) holds /dev/vfio/3"})
    roles, groups, steps = read_steps(saved)
    assert roles == {"e1000e": E1, "group_e1000e": E2, "group_testdev": T} and groups == {E1: 3, E2: 4, T: 4}
    assert [s["step"] for s in steps] == list(EXPECT)[:6]
    assert steps[1]["drivers_after"] == {"e1000e": "vfio-pci", "group_e1000e": "e1000e", "group_testdev": None}
    boot_net = steps[0]["net"]
    assert [judge(s, roles, "77", boot_net) for s in steps[:5]] == [[], [], [], [], []]
    assert judge(steps[3], roles, "78", boot_net) == ["the refusal does not name the holder PID 78"]
    no_cdev = dict(steps[2], output=f"/sys/bus/pci/devices/{E1}/vfio-dev:\n\n/dev/vfio/devices:")
    assert judge(no_cdev, roles, "77", boot_net) == [
        "no vfio-dev/vfioN cdev for the bound e1000e (kernel without VFIO_DEVICE_CDEV?)"]
    wrong = judge(steps[5], roles, "77", boot_net)
    assert "exit 0, expected a refusal" in wrong and f"group_e1000e ({E2}) on vfio-pci, expected e1000e" in wrong


def test_not_a_bind_recipe_is_one_error_line():
    proc = run_doit("labbind", cwd=REPO)
    assert_one_error_line(proc, "not a runtime-bind lab recipe", "lab-bind.toml")


# --- the real run (slow): build the bind lab's kernel, boot it, bind and release inside ------------
# Its kernel is lab.toml's plus E1000E, from the 6.12 tree with iommufd (its own build folder, so the default lab's build is no
# help): the first run compiles it (38 min on 2 cores shared with a CI run), later runs only
# boot (57 s, the guest 54 s of it).

@pytest.mark.slow
def test_bind_lab_binds_and_releases_e1000e_inside_the_guest():
    LAB_DIR.mkdir(parents=True, exist_ok=True)  # its own doit database, apart from the default lab's
    proc = run_doit(f"recipe={BIND}", cwd=LAB_DIR)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "labbind: PASS" in proc.stdout, proc.stdout
    v = json.loads((LAB_DIR / "bind" / "verdict.json").read_text())
    assert v["ok"] and not v["missing_steps"] and v["edu"]["driver"] == "vfio-pci"
    steps = {s["step"]: s for s in v["steps"]}
    assert list(steps) == list(EXPECT)
    assert steps["boot"]["drivers_after"] == {"e1000e": "e1000e", "group_e1000e": "e1000e", "group_testdev": None}
    assert steps["bind"]["exit"] == 0 and steps["bind"]["drivers_after"]["e1000e"] == "vfio-pci"
    # Debian's 6.12 with vfio_backend = "iommufd": the bound e1000e has its cdev, and doctor on the
    # saved guest passes /dev/iommu and edu's cdev (bound at boot).
    assert steps["cdev"]["exit"] == 0 and "/dev/iommu" in steps["cdev"]["output"], steps["cdev"]
    assert v["kernel"].startswith("6.12.")
    assert v["cdev_checks"] == {"iommufd": "pass", "vfio-cdev[1234:11e8]": "pass"}, v["cdev_checks"]
    assert steps["release-held"]["exit"] != 0 and f"PID {v['holder_pid']}" in steps["release-held"]["output"]
    assert steps["release"]["drivers_after"]["e1000e"] == "e1000e" and steps["release"]["net"] == steps["boot"]["net"]
    assert steps["group-refused"]["exit"] != 0 and "IOMMU group" in steps["group-refused"]["output"]
    assert v["iommu_groups"][v["devices"]["group_e1000e"]] == v["iommu_groups"][v["devices"]["group_testdev"]]
    assert steps["group-bind"]["drivers_after"] == {"e1000e": "e1000e", "group_e1000e": "vfio-pci",
                                                    "group_testdev": "vfio-pci"}
    assert steps["group-release"]["exit"] == 0 and steps["group-release"]["drivers_after"]["group_e1000e"] == "e1000e"
    # A second run would only boot: kernel, grub, vfio and the image are up to date.
    again = run_doit(f"recipe={BIND}", "labbind:image", cwd=LAB_DIR)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not [line for line in again.stdout.splitlines() if line.startswith(".  ")], again.stdout
