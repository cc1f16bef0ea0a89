"""VM safety: no install over data, private files, VNC password parity, Secure Boot VARS, KVM probe, stuck installs."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit
from lfspass.recipe import load_recipe
from lfspass.vm.launcher import domain_xml, script_text
from lfspass.vm.plan import build_vm_plan, kvm_probe
from lfspass.vm.qemu_argv import build_argv
from lfspass.vm.install_watch import SerialWatch
from test_vm import NETBOOT, T10, write_recipe


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _disk_with_data(path: Path, size: str = "64M") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x55 0 64k", str(path)], check=True, capture_output=True)


def _fake_media(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    (media / "linux").write_bytes(b"not a kernel")
    (media / "initrd.gz").write_bytes(b"not an initrd")
    return media


def test_no_install_over_a_disk_with_data(tmp_path):
    disk = tmp_path / "images/d2l.qcow"
    _disk_with_data(disk)
    before = _sha(disk)
    media = _fake_media(tmp_path)
    body = (f'[[vms]]\nname = "d"\naccel = "tcg"\nmemory = "256M"\nvnc = {{ enabled = false }}\n'
            f'disk = {{ path = "{disk}", size = "64M" }}\n'
            f'installer = {{ source = "netboot", netboot = "{media}" }}\n')
    path = write_recipe(tmp_path, body)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    line = assert_one_error_line(proc, str(disk), "already holds data", "disk.path", "LFSPASS_REINSTALL=1",
                                 "overwrite = true")
    assert "snapshot" in line
    assert _sha(disk) == before
    folder = tmp_path / "root/var/lib/lfspass/vms/d"
    assert not folder.exists()  # nothing written: no VARS, no launcher, no QEMU started
    # LFSPASS_REINSTALL=1 alone is not enough...
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path, env={"LFSPASS_REINSTALL": "1"})
    assert_one_error_line(proc, "overwrite = true")
    assert _sha(disk) == before
    # ...both together: an internal snapshot first, then the installer (which fails on the fake kernel).
    path.write_text(path.read_text().replace('source = "netboot"', 'source = "netboot", overwrite = true'))
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path, env={"LFSPASS_REINSTALL": "1"})
    assert_one_error_line(proc, "install did not finish")
    assert "qemu-img snapshot -a lfspass-before-install-" in proc.stdout
    snaps = subprocess.run(["qemu-img", "snapshot", "-l", str(disk)], capture_output=True, text=True).stdout
    assert "lfspass-before-install-" in snaps


def test_shipped_hpe_recipe_does_not_install_over_the_seed_disk():
    recipe = load_recipe(REPO / "recipes/hpe-dl380-t10.toml")
    (vm,) = recipe.vms
    assert vm.disk.path.endswith("d2l.qcow") and vm.installer.unattended is False


def test_vm_files_are_private(tmp_path):
    media = _fake_media(tmp_path)
    path = write_recipe(tmp_path, f'[[vms]]\nname = "p"\naccel = "tcg"\nmemory = "256M"\nvnc = {{ enabled = false }}\n'
                                  f'disk = {{ size = "64M" }}\ninstaller = {{ source = "netboot", netboot = "{media}" }}\n')
    os.umask(0o022)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "install did not finish")
    folder = tmp_path / "root/var/lib/lfspass/vms/p"
    modes = {p: oct(p.stat().st_mode & 0o777) for p in (folder, folder / "install")}
    modes.update({p: oct(p.stat().st_mode & 0o777) for p in (folder / "p.qcow2", folder / "OVMF_VARS.fd",
                  folder / "install/serial.log", folder / "install/qemu.log", folder / "install/qemu-argv.json")})
    assert modes == {**dict.fromkeys((folder, folder / "install"), "0o700"),
                     **{p: "0o600" for p in modes if p not in (folder, folder / "install")}}
    # The preseed (with its password hash) and its socket are gone once the install ended.
    assert not (folder / "install/preseed.cfg").exists() and not (folder / "install/preseed.sock").exists()
    assert "127.0.0.1" not in (folder / "install/relay.py").read_text()



@pytest.mark.parametrize(("mode", "warned"), [(0o711, False), (0o755, True)])
def test_an_existing_vm_folder_keeps_its_mode(tmp_path, mode: int, warned: bool):
    """Another guest (or libvirt's QEMU user) may need the folder as it is: never tightened silently."""
    path = write_recipe(tmp_path, '[[vms]]\nname = "s"\naccel = "tcg"\ndisk = { size = "64M" }\n')
    folder = tmp_path / "root/var/lib/lfspass/vms/s"
    folder.mkdir(parents=True)
    folder.chmod(mode)
    (folder / "other-guest.qcow2").write_bytes(b"")
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert folder.stat().st_mode & 0o777 == mode
    assert {oct(p.stat().st_mode & 0o777) for p in (folder / "s.qcow2", folder / "OVMF_VARS.fd")} == {"0o600"}
    said = [line for line in proc.stderr.splitlines() if line.startswith("warning:") and str(folder) in line]
    assert len(said) == (1 if warned else 0), proc.stderr
    if warned:
        assert f"{mode:04o}" in said[0] and "chmod go-r" in said[0]

def test_preseed_socket_answers_only_through_its_file(tmp_path):
    from lfspass.vm.preseed import PreseedServer

    folder = tmp_path / "install"
    folder.mkdir(mode=0o700)
    server = PreseedServer("d-i secret string x\n", folder)
    try:
        assert oct(server.path.stat().st_mode & 0o777) == "0o600"
        relay = folder / "relay.py"
        relay.write_text(server.relay_text())
        out = subprocess.run([sys.executable, str(relay)], input=b"GET /preseed.cfg HTTP/1.0\r\n\r\n",
                             capture_output=True, timeout=20).stdout
        assert out.startswith(b"HTTP/1.0 200") and out.endswith(b"d-i secret string x\n")
    finally:
        server.stop()
    assert not server.path.exists()


def _vnc_plan(tmp_path: Path, vnc: str) -> Path:
    path = write_recipe(tmp_path, f'[[vms]]\nname = "v"\naccel = "tcg"\ndir = "{tmp_path}/vm"\nvnc = {{ {vnc} }}\n')
    load_recipe(path)  # the recipe itself loads: the refusals below are the VM guard's
    return path


def test_vnc_beyond_loopback_needs_a_password_both_ways(tmp_path):
    path = _vnc_plan(tmp_path, 'listen = "0.0.0.0", password = true')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "0.0.0.0", "password_file")
    assert not (tmp_path / "vm").exists()
    secret = tmp_path / "vnc.pass"
    secret.write_text("s3cret")
    secret.chmod(0o644)
    path = _vnc_plan(tmp_path, f'listen = "0.0.0.0", password_file = "{secret}"')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, str(secret), "chmod 600")
    secret.chmod(0o600)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    xml = tmp_path / "vm/v.xml"
    assert 'passwd="s3cret"' in xml.read_text() and oct(xml.stat().st_mode & 0o777) == "0o600"
    script = (tmp_path / "vm/v.sh").read_text()
    assert "password-secret=vncpass" in script and f"file={secret}" in script and "s3cret" not in script
    assert subprocess.run(["virt-xml-validate", str(xml)], capture_output=True).returncode == 0


def test_launcher_comments_stay_comments(tmp_path):
    body = ('[[devices]]\nid = "10de:9999"\nname = "T10"\n'
            '[[vms]]\nname = "c"\naccel = "tcg"\ndevices = ["10de:9999"]\nmissing_devices = "skip"\n')
    recipe = load_recipe(write_recipe(tmp_path, body, T10))
    # The loader refuses control characters; a plugin or pci.ids name could still carry one.
    recipe.devices[-1].name = "T10\ntouch /tmp/lfspass-pwned"
    plan = build_vm_plan(recipe, recipe.vms[0])
    text = script_text(plan, build_argv(plan))
    head = text.split("\nexec ")[0].splitlines()
    assert head[0] == "#!/bin/sh" and all(line.startswith("# ") for line in head[1:])
    assert any("touch /tmp/lfspass-pwned" in line for line in head)  # said, inside a comment
    import xml.etree.ElementTree as ET

    ET.fromstring(domain_xml(plan, tmp_path / "c.xml"))


def test_secure_boot_on_plain_vars_is_refused(tmp_path):
    path = write_recipe(tmp_path, '[[vms]]\nname = "s"\naccel = "tcg"\ndisk = { size = "64M" }\n')
    assert run_doit("vm", f"recipe={path}", cwd=tmp_path).returncode == 0
    nvram = tmp_path / "root/var/lib/lfspass/vms/s/OVMF_VARS.fd"
    before = _sha(nvram)
    path.write_text(path.read_text() + "firmware = { secure_boot = true }\n")
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, str(nvram), "no Secure Boot keys", f"{nvram}.plain")
    assert _sha(nvram) == before
    nvram.rename(nvram.with_name("OVMF_VARS.fd.plain"))
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "property=secure,value=on" in (nvram.parent / "s.sh").read_text() and _sha(nvram) != before


def test_a_vars_file_linked_out_of_the_root_is_refused(tmp_path: Path) -> None:
    """QEMU would write the guest's UEFI variables through the link: refused before anything is made."""
    recipe = write_recipe(tmp_path, '[[vms]]\nname = "s"\naccel = "tcg"\ndisk = { size = "64M" }\n')
    out = tmp_path / "outside"
    out.mkdir()
    target = out / "OVMF_VARS.fd"
    target.write_bytes(Path("/usr/share/OVMF/OVMF_VARS_4M.fd").read_bytes())
    digest = _sha(target)
    vm_dir = tmp_path / "root/var/lib/lfspass/vms/s"
    vm_dir.mkdir(parents=True)
    (vm_dir / "OVMF_VARS.fd").symlink_to(target)
    proc = run_doit("vm", f"recipe={recipe}", cwd=tmp_path)
    assert_one_error_line(proc, f"the link {vm_dir / 'OVMF_VARS.fd'}", "outside the install root")
    assert _sha(target) == digest
    assert sorted(p.name for p in vm_dir.iterdir()) == ["OVMF_VARS.fd"]   # no disk, no launcher


def test_accel_auto_runs_a_guest_to_decide(tmp_path):
    assert kvm_probe("/nonexistent/kvm") is not None
    recipe = load_recipe(write_recipe(tmp_path, '[[vms]]\nname = "a"\n'))
    plan = build_vm_plan(recipe, recipe.vms[0])
    why = kvm_probe()
    assert plan.accel == ("kvm" if why is None else "tcg")
    if why is not None:  # this host: /dev/kvm answers but cannot set MSR 0x10a
        assert any(n.startswith("accel = auto chose tcg") and why in n for n in plan.notes)
        assert "-accel tcg" in script_text(plan, build_argv(plan)).replace("'", "")


def test_serial_watch_sees_an_error_screen_and_silence(tmp_path):
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    now = [0.0]
    watch = SerialWatch(log, silence=30, clock=lambda: now[0])
    with open(log, "ab") as fh:
        fh.write(b"\x1b[1;1H\x1b[0;37;44m  lqqqqqqqqqqqqqqqq\x1b[1;24H[!!] Download installer components\x1b[K\r\n"
                 b"  x No kernel modules were found. x\r\n")
    assert watch.poll() is None
    now[0] = 3
    said = watch.poll()
    assert said.startswith("the installer shows an error screen: [!!] Download installer components")
    assert "No kernel modules were found." in said
    quiet = SerialWatch(log, silence=30, clock=lambda: now[0])
    assert quiet.poll() is None or "error screen" in quiet.poll()
    calm = tmp_path / "calm.log"
    calm.write_bytes(b"Loading components\r\n")
    watch = SerialWatch(calm, silence=30, clock=lambda: now[0])
    assert watch.poll() is None
    now[0] += 31
    assert "no installer output for 30 s" in watch.poll()


def test_sigterm_to_doit_stops_the_installer(tmp_path):
    """A real kernel with a bad initrd keeps QEMU busy; SIGTERM to doit ends it and the server."""
    media = tmp_path / "media"
    media.mkdir()
    (media / "linux").write_bytes((NETBOOT / "linux").read_bytes())
    (media / "initrd.gz").write_bytes(b"not an initrd")
    path = write_recipe(tmp_path, f'[[vms]]\nname = "t"\naccel = "tcg"\nmemory = "256M"\nvnc = {{ enabled = false }}\n'
                                  f'disk = {{ size = "64M" }}\ninstaller = {{ source = "netboot", netboot = "{media}" }}\n')
    folder = tmp_path / "root/var/lib/lfspass/vms/t"
    doit = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "--dir", str(tmp_path), "vm",
                             f"recipe={path}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pidfile = folder / "install/qemu.pid"
    end = time.monotonic() + 120
    while not pidfile.exists() and time.monotonic() < end and doit.poll() is None:
        time.sleep(0.2)
    assert pidfile.exists(), doit.communicate()
    qemu = int(pidfile.read_text())
    time.sleep(1)
    assert Path(f"/proc/{qemu}").exists()
    doit.send_signal(signal.SIGTERM)
    _out, err = doit.communicate(timeout=60)
    assert doit.returncode != 0
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not Path(f"/proc/{qemu}").exists() or "zombie" in Path(f"/proc/{qemu}/status").read_text().lower()
    assert not (folder / "install/preseed.sock").exists() and not (folder / "install/preseed.cfg").exists()


def test_vm_fetch_rechecks_a_changed_target(tmp_path):
    from lfspass.fsutil import sha256_file

    code, tmpl = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    body = (f'[[vms]]\nname = "f"\naccel = "tcg"\ndisk = {{ size = "64M" }}\n[vms.firmware]\ncode_url = "file://{code}"\n'
            f'code_sha256 = "{sha256_file(code)}"\nvars_url = "{tmpl}"\nvars_sha256 = "{sha256_file(tmpl)}"\n')
    path = write_recipe(tmp_path, body)
    env = {"LFSPASS_CACHE": str(tmp_path / "cache")}
    assert run_doit("vm", f"recipe={path}", cwd=tmp_path, env=env).returncode == 0
    fetched = tmp_path / "root/var/lib/lfspass/vms/f/firmware/OVMF_CODE.fd"
    again = run_doit("vm", f"recipe={path}", cwd=tmp_path, env=env)
    assert "-- vm:fetch:f" in again.stdout  # unchanged: not even hashed
    with open(fetched, "r+b") as fh:  # the verified firmware is changed in place after the fact
        fh.seek(1 << 20)
        fh.write(b"evil")
    again = run_doit("vm", f"recipe={path}", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert ".  vm:fetch:f" in again.stdout and fetched.read_bytes() == code.read_bytes()


@pytest.mark.slow
def test_stuck_netboot_installer_ends_with_its_error_screen(tmp_path):
    """No network for the netboot installer (restrict = true, no mirror): d-i stops at a [!!]
    screen a few minutes in; lfspass ends the install then, with that screen's words."""
    from lfspass.errors import CheckFailed
    from lfspass.vm.install import run_install

    path = write_recipe(tmp_path, '[[vms]]\nname = "stuck"\naccel = "tcg"\nmemory = "1G"\nvnc = { enabled = false }\n'
                                  'disk = { size = "2G" }\ninstaller = { source = "netboot", silence = 300, timeout = 20 }\n')
    assert run_doit("vm:firmware:stuck", "vm:disk:stuck", f"recipe={path}", cwd=tmp_path).returncode == 0
    recipe = load_recipe(path)
    plan = build_vm_plan(recipe, recipe.vms[0])
    started = time.monotonic()
    with pytest.raises(CheckFailed) as err:   # the install never said it was done: exit 1
        run_install(plan, force=False, say=lambda *a: None)
    said = err.value.one_line()
    assert "the installer shows an error screen: [!!]" in said, said
    assert time.monotonic() - started < 15 * 60
    pid = int((plan.dir / "install/qemu.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
