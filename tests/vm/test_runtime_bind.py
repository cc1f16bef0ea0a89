"""Launchers for bind = "runtime" and vfio_backend = "iommufd": golden argv/XML/script, and the script run for real.

The iommufd branch depends on the QEMU the launcher will run.  This machine's QEMU (Debian
12's 7.2) lists no iommufd object, so the group path is tested with the real binary; the
iommufd path with a small ``qemu-system-x86_64`` script on PATH that answers ``-object help``
as a QEMU 9.0 or later does: a stand-in for a newer QEMU, not QEMU.  ``virsh --version`` is
pinned the same way (9.0.0 as Debian 12's, 12.1.0 for a libvirt with iommufd).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from make_fixtures import build

from lfspass.recipe import load_recipe
from lfspass.vm import iommufd
from lfspass.vm.launcher import domain_xml, script_text
from lfspass.vm.plan import build_vm_plan
from lfspass.vm.qemu_argv import build_argv

GOLDEN = Path(__file__).resolve().parent / "golden-runtime"
HOST = Path(__file__).resolve().parent.parent / "host"
VM = '[[vms]]\nname = "d2l"\nmemory = "16G"\ncpus = 8\naccel = "kvm"\ndir = "/srv/lfspass/d2l"\ndevices = ["82:00.0"]\n'
CASES = {
    # name: (kernel/vm keys, stand-in QEMU lists iommufd?, stand-in virsh version or None for the real QEMU)
    "t10-runtime": ('[[vms]]\nbind = "runtime"\n', None, None),
    "t10-iommufd-qemu72": ('[kernel]\nvfio_backend = "iommufd"\n', None, None),
    "t10-iommufd-libvirt9": ('[kernel]\nvfio_backend = "iommufd"\n', True, "9.0.0"),
    "t10-iommufd-libvirt12": ('[kernel]\nvfio_backend = "iommufd"\n[[vms]]\nbind = "runtime"\n', True, "12.1.0"),
}
FAKE_QEMU = """#!/bin/sh
# A stand-in for a QEMU 9.0 or later, for the probe only: `-object help` lists iommufd.
if [ "$1" = "-object" ] && [ "$2" = "help" ]; then
    printf 'List of user creatable objects:\\n  authz-list\\n  iommufd\\n  memory-backend-ram\\n  secret\\n'
    exit 0
fi
exit 1
"""


def _stand_ins(bin_dir: Path, qemu: bool | None, virsh: str | None) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    if qemu:
        (bin_dir / "qemu-system-x86_64").write_text(FAKE_QEMU)
    if virsh:
        (bin_dir / "virsh").write_text(f"#!/bin/sh\necho {virsh}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)


def _recipe(folder: Path, keys: str, sysroot: Path) -> Path:
    kernel, _, vm = keys.partition("[[vms]]\n")
    body = (f'[host]\nroot = "root"\nsysfs_root = "{sysroot}"\n'
            + (kernel if kernel.startswith("[kernel]") else '[kernel]\n') + 'version = "6.10.5"\n'
            + '[[devices]]\naddress = "82:00.0"\nname = "Tesla T10"\n' + VM + vm)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r.toml").write_text(body)
    return folder / "r.toml"


def plan_for(case: str, tmp: Path, monkeypatch: pytest.MonkeyPatch):
    keys, qemu, virsh = CASES[case]
    sysroot = tmp / "host"
    if not sysroot.exists():
        build("dl380-t10-on-host", sysroot)
    _stand_ins(tmp / case / "bin", qemu, virsh)
    monkeypatch.setenv("PATH", f"{tmp / case / 'bin'}{os.pathsep}{os.environ['PATH']}")
    recipe = load_recipe(_recipe(tmp / case, keys, sysroot))
    return build_vm_plan(recipe, recipe.vms[0])


def golden_texts(case: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    plan = plan_for(case, tmp, monkeypatch)
    argv = build_argv(plan)
    texts = {f"{case}.argv": "\n".join(argv) + "\n", f"{case}.xml": domain_xml(plan, plan.dir / "d2l.xml"),
             f"{case}.sh": script_text(plan, argv)}
    return {n: t.replace(sys.executable, "@PYTHON@").replace(str(tmp), "@TMP@") for n, t in texts.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_launchers(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compared with the committed files only; `python tests/regen_golden.py` rewrites them."""
    for name, text in golden_texts(case, tmp_path, monkeypatch).items():
        path = GOLDEN / name
        assert path.exists(), f"{path} missing: python tests/regen_golden.py, then review it"
        assert text == path.read_text(), f"{path} differs; if the change is meant: python tests/regen_golden.py"


def test_real_qemu_has_no_iommufd_so_the_group_path_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    real = shutil.which("qemu-system-x86_64")
    assert real and (objects := iommufd.qemu_objects(real)) and "secret" in objects  # it answered
    assert "iommufd" not in objects, "this QEMU has iommufd: the group-path branch needs Debian 12's QEMU 7.2"
    plan = plan_for("t10-iommufd-qemu72", tmp_path, monkeypatch)
    argv = build_argv(plan)
    assert not plan.iommufd and "iommufd" not in " ".join(argv)
    assert any("lists no iommufd object" in n and real in n for n in plan.notes)


def test_newer_qemu_and_libvirt_get_the_iommufd_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_for("t10-iommufd-libvirt12", tmp_path, monkeypatch)
    argv = build_argv(plan)
    assert argv[argv.index("-object", argv.index("-serial")) + 1] == "iommufd,id=iommufd0"
    assert "vfio-pci,host=0000:82:00.0,bus=rp1,addr=00.0,iommufd=iommufd0,multifunction=on" in argv
    assert "vfio-pci,host=0000:82:00.1,bus=rp1,addr=00.1,iommufd=iommufd0" in argv
    assert domain_xml(plan, plan.dir / "d2l.xml").count('<driver name="vfio" iommufd="yes"/>') == 2
    old = plan_for("t10-iommufd-libvirt9", tmp_path, monkeypatch)
    xml = domain_xml(old, old.dir / "d2l.xml")
    assert old.iommufd and 'iommufd="yes"' not in xml and "iommufd,id" not in xml   # QEMU yes, libvirt 9.0 no
    (tmp_path / "d.xml").write_text(xml)  # the group-path XML is valid for this host's libvirt schema
    proc = subprocess.run(["virt-xml-validate", str(tmp_path / "d.xml"), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runtime_devices_get_no_boot_time_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lfspass.boot.vfio import render_modprobe
    from lfspass.plan import build_plan

    plan = plan_for("t10-runtime", tmp_path, monkeypatch)
    host = build_plan(plan.recipe, "6.10.5")
    text = render_modprobe(host)
    assert "ids=" not in text and host.vfio_ids == []
    assert "# 0000:82:00.0 (10de:1e37): left to its host driver at boot; `lfspass bind` hands it" in text
    assert "softdep nouveau pre: vfio-pci" in text   # kept: harmless without ids, and vfio-pci loads first


# -- the script itself, run by sh with the fake kernel in every lfspass it starts ---------------------
RUN_QEMU = """#!/bin/sh
# Stand-in for QEMU in a launcher run: notes the drivers it found, then exits or waits to be killed.
for d in 0000:82:00.0 0000:82:00.1; do
    echo "$d $(basename "$(readlink "$LFSPASS_TEST_SYSFS/sys/bus/pci/devices/$d/driver")")" >> "$LFSPASS_TEST_MARK"
done
[ "$LFSPASS_TEST_QEMU" = wait ] && exec sleep 300
exit 7
"""


def _launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict, Path]:
    plan = plan_for("t10-runtime", tmp_path, monkeypatch)
    sysroot = Path(plan.recipe.host.sysfs_root)
    script = tmp_path / "d2l.sh"
    script.write_text(script_text(plan, build_argv(plan)))
    (tmp_path / "qemu-bin").mkdir()
    (tmp_path / "qemu-bin/qemu-system-x86_64").write_text(RUN_QEMU)
    (tmp_path / "qemu-bin/qemu-system-x86_64").chmod(0o755)
    spec = tmp_path / "kernel.json"
    spec.write_text(json.dumps({"root": str(sysroot), "matches": {"0000:82:00.0": "nouveau", "0000:82:00.1": "snd_hda_intel"}}))
    env = {**os.environ, "PATH": f"{tmp_path / 'qemu-bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HOST / "fakesite"), os.environ.get("PYTHONPATH")) if p),
           "LFSPASS_FAKE_KERNEL": str(spec), "LFSPASS_TEST_SYSFS": str(sysroot),
           "LFSPASS_TEST_MARK": str(tmp_path / "qemu-saw")}
    return script, env, sysroot


def _driver(sysroot: Path, address: str) -> str:
    return os.path.basename(os.readlink(sysroot / "sys/bus/pci/devices" / address / "driver"))


def test_launcher_binds_for_qemu_and_releases_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script, env, sysroot = _launcher(tmp_path, monkeypatch)
    proc = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 7, proc.stdout + proc.stderr     # QEMU's own exit status
    assert (tmp_path / "qemu-saw").read_text() == "0000:82:00.0 vfio-pci\n0000:82:00.1 vfio-pci\n"
    assert _driver(sysroot, "0000:82:00.0") == "nouveau" and _driver(sysroot, "0000:82:00.1") == "snd_hda_intel"
    assert "82:00.0 3D controller [10de:1e37]: vfio-pci -> nouveau" in proc.stdout


def test_launcher_releases_when_terminated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script, env, sysroot = _launcher(tmp_path, monkeypatch)
    child = subprocess.Popen(["sh", str(script)], env={**env, "LFSPASS_TEST_QEMU": "wait"}, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300   # waiting for QEMU to start, not measuring anything
    while not (tmp_path / "qemu-saw").exists() or len((tmp_path / "qemu-saw").read_text().splitlines()) < 2:
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGTERM)   # as systemd or a terminal's hang-up reaches the whole group
    out, err = child.communicate(timeout=300)
    assert child.returncode == 143, out + err
    assert _driver(sysroot, "0000:82:00.0") == "nouveau" and _driver(sysroot, "0000:82:00.1") == "snd_hda_intel"


def test_launcher_does_not_start_qemu_when_bind_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script, env, sysroot = _launcher(tmp_path, monkeypatch)
    dev = Path(os.path.realpath(sysroot / "sys/bus/pci/devices/0000:82:00.0"))
    (dev / "drm/card0").mkdir(parents=True)            # nouveau's DRM node, held by a compositor
    (sysroot / "proc/2001/fd").mkdir(parents=True)
    (sysroot / "proc/2001/comm").write_text("Xorg\n")
    os.symlink("/dev/dri/card0", sysroot / "proc/2001/fd/9")
    proc = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "PID 2001 (Xorg) holds /dev/dri/card0" in proc.stderr, proc.stderr
    assert not (tmp_path / "qemu-saw").exists() and _driver(sysroot, "0000:82:00.0") == "nouveau"


def test_a_runtime_card_with_the_id_of_a_boot_card_is_warned_about(tmp_path: Path) -> None:
    """Two T10s, one per VM: vfio-pci ids= would take both at boot, so the plan says so."""
    from make_fixtures import Dev, write_root

    from lfspass.plan import build_plan

    cards = [Dev(f"0000:{bus}:00.0", "10de:1e37", 0x030200, "10de:1370", 0xA1, "nouveau", group, 1, [(0, 1 << 24, 0x40200)])
             for bus, group in (("82", 72), ("83", 73))]
    sysroot = write_root(tmp_path / "host", cards, cmdline="intel_iommu=on", cpuinfo="flags: vmx\n", dmesg=None,
                         release="6.10.5", config=None, modules_dep="", modules_builtin="")
    (tmp_path / "r.toml").write_text(
        f'[host]\nroot = "root"\nsysfs_root = "{sysroot}"\n[kernel]\nversion = "6.10.5"\n'
        '[[devices]]\naddress = "82:00.0"\n[[devices]]\naddress = "83:00.0"\n'
        '[[vms]]\nname = "a"\ndevices = ["82:00.0"]\n[[vms]]\nname = "b"\nbind = "runtime"\ndevices = ["83:00.0"]\n')
    plan = build_plan(load_recipe(tmp_path / "r.toml"), "6.10.5")
    assert [d.address for d in plan.runtime] == ["0000:83:00.0"] and plan.vfio_ids == ["10de:1e37"]
    assert any("10de:1e37: a bind = \"runtime\" device has the id of a device bound at boot" in w for w in plan.warnings)
