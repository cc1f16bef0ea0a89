"""Doctor's iommufd checks (/dev/iommu, each vfio-pci device's vfio-dev/vfioN cdev) and bind = "runtime" devices,
on the seed's DL380 laid out as an iommufd host would show it, and on its `doctor --save` copy."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli
from make_fixtures import build

CDEVS = {"0000:05:00.0": "vfio0", "0000:82:00.0": "vfio1"}


def iommufd_host(dest: Path, nodes: bool = True) -> Path:
    """The dl380 booted with the iommufd profile: IOMMUFD=m + VFIO_DEVICE_CDEV=y, the nodes and the cdev folders."""
    root = build("dl380", dest)
    with open(root / "boot/config-6.10.5", "a") as cfg:
        cfg.write("CONFIG_IOMMUFD=m\nCONFIG_VFIO_DEVICE_CDEV=y\n")
    for address, cdev in CDEVS.items():
        (Path(os.path.realpath(root / "sys/bus/pci/devices" / address)) / "vfio-dev" / cdev).mkdir(parents=True)
    if nodes:
        (root / "dev/iommu").write_text("")
        (root / "dev/vfio/devices").mkdir()
        for cdev in CDEVS.values():
            (root / "dev/vfio/devices" / cdev).write_text("")
    return root


def checks(*args: str) -> tuple[int, dict[str, dict]]:
    proc = run_cli("doctor", *args, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, {c["id"]: c for c in json.loads(proc.stdout)["checks"]}


def test_iommufd_host_passes_and_a_saved_copy_says_the_same(tmp_path: Path) -> None:
    root = iommufd_host(tmp_path / "live")
    text = run_cli("doctor", "--host-root", str(root), "--save", str(tmp_path / "saved"))
    assert text.returncode == 0, text.stdout + text.stderr
    assert "PASS  iommufd" in text.stdout and "/dev/iommu present" in text.stdout
    code, got = checks("--host-root", str(root))
    assert got["vfio-cdev[82:00.0]"]["status"] == "pass"
    assert got["vfio-cdev[82:00.0]"]["detail"] == "82:00.0: vfio-dev/vfio1 -> /dev/vfio/devices/vfio1"
    assert got["vfio-cdev[05:00.0]"]["detail"] == "05:00.0: vfio-dev/vfio0 -> /dev/vfio/devices/vfio0"
    saved_code, saved = checks("--host-root", str(tmp_path / "saved"))
    assert (saved_code, {k: v for k, v in saved.items() if "cdev" in k or k == "iommufd"}) == \
        (code, {k: v for k, v in got.items() if "cdev" in k or k == "iommufd"})
    assert (tmp_path / "saved/dev/vfio/devices/vfio1").is_file() and (tmp_path / "saved/dev/vfio/59").is_file()


def test_missing_nodes_are_named_with_the_fix(tmp_path: Path) -> None:
    root = iommufd_host(tmp_path / "h", nodes=False)
    (root / "dev/vfio/devices").mkdir()
    code, got = checks("--host-root", str(root))
    assert got["iommufd"]["status"] == "warn" and "IOMMUFD=m but there is no /dev/iommu" in got["iommufd"]["detail"]
    cdev = got["vfio-cdev[82:00.0]"]
    assert cdev["status"] == "fail" and "no /dev/vfio/devices/vfio1" in cdev["detail"]
    assert "mknod /dev/vfio/devices/vfio1 c $(tr : ' ' < /sys/bus/pci/devices/0000:82:00.0/vfio-dev/vfio1/dev)" in cdev["fix"]
    assert code == 1


def test_group_only_host_gets_no_iommufd_checks_unless_the_recipe_asks(tmp_path: Path) -> None:
    root = build("dl380", tmp_path / "h")
    _code, got = checks("--host-root", str(root))
    assert not [k for k in got if k == "iommufd" or k.startswith("vfio-cdev")]
    recipe = tmp_path / "r.toml"
    recipe.write_text('[kernel]\nvfio_backend = "iommufd"\n[[devices]]\naddress = "82:00.0"\n')
    code, got = checks("--host-root", str(root), "--recipe", str(recipe))
    assert got["iommufd"]["status"] == "fail" and "built without IOMMUFD" in got["iommufd"]["detail"]
    assert 'vfio_backend = "iommufd"' in got["iommufd"]["fix"]
    assert got["vfio-cdev[82:00.0]"]["status"] == "fail" and code == 1


@pytest.mark.parametrize("fixture, address, status, words", [
    ("dl380-t10-on-host", "82:00.0", "pass", "`lfspass bind` takes 82:00.0, 82:00.1"),
    ("dl380", "02:00.0", "fail", "02:00.1 (Ethernet controller [14e4:1657]) on tg3"),
])
def test_runtime_devices_are_judged_by_what_bind_will_take(tmp_path: Path, fixture, address, status, words) -> None:
    root = build(fixture, tmp_path / "h")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[devices]]\naddress = "{address}"\n[[vms]]\nname = "g"\nbind = "runtime"\n'
                      f'devices = ["{address}"]\n')
    _code, got = checks("--host-root", str(root), "--recipe", str(recipe))
    assert got[f"device-driver[{address}]"]["status"] == "pass"
    assert "until its VM starts" in got[f"device-driver[{address}]"]["detail"]
    group = got[f"device-group[{address}]"]
    assert group["status"] == status and words in group["detail"], group
