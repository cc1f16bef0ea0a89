"""VM: golden argv/XML, libvirt validation, safe quoting, kept disks and VARS, OVMF and installer boots."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit
from lfspass.errors import RecipeError
from lfspass.vm.firmware import find_descriptor
from lfspass.vm.install import extract_iso, kernel_initrd, marker_path, run_install, start_install
from lfspass.vm.launcher import domain_uuid, domain_xml, script_text
from lfspass.vm.qemu_argv import build_argv
from lfspass.recipe import load_recipe
from lfspass.vm.plan import build_vm_plan

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from make_fixtures import Dev, write_root

GOLDEN = Path(__file__).resolve().parent / "golden"
G, M = 1 << 30, 1 << 20
NETBOOT = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")

# Two cards as the seed's DL380 shows them (docs/explanation/iommu-groups.md,
# docs/explanation/p10-mmio.md): the T10 with the HDMI
# audio function the NVIDIA quirk exposes, and the P10 alone in group 59 with its 32G BAR.
T10 = [Dev("0000:82:00.0", "10de:1e37", 0x030200, "10de:1370", 0xa1, "vfio-pci", 40, 1,
           [(0, 16 * M, 0x40200), (1, 16 * G, 0x14220C), (3, 32 * M, 0x14220C)]),
       Dev("0000:82:00.1", "10de:10f8", 0x040300, "10de:1370", 0xa1, "vfio-pci", 40, 1, [(0, 16 * 1024, 0x40200)])]
P10 = [Dev("0000:05:00.0", "10de:1b39", 0x030200, "10de:1217", 0xa1, "vfio-pci", 59, 0,
           [(0, 16 * M, 0x40200), (1, 32 * G, 0x14220C), (3, 32 * M, 0x14220C)])]


def host_root(dest: Path, devs: list[Dev]) -> Path:
    return write_root(dest, devs, cmdline="intel_iommu=on iommu=pt", cpuinfo="flags: vmx\n", dmesg=None,
                      release="6.10.5", config=None, modules_dep="", modules_builtin="")


def write_recipe(folder: Path, body: str, devs: list[Dev] | None = None, cpu: str = "intel") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sysfs = host_root(folder / "sysroot", devs) if devs else Path("/nonexistent")
    devices = "".join(f'\n[[devices]]\naddress = "{d.addr}"\n' for d in (devs or []) if d.addr.endswith(".0"))
    text = (f'[host]\nroot = "root"\nsysfs_root = "{sysfs}"\ncpu_vendor = "{cpu}"\n'
            f'[kernel]\nversion = "6.10.5"\n{devices}\n' + textwrap.dedent(body))
    (folder / "r.toml").write_text(text)
    return folder / "r.toml"


CASES = {
    # name: (vm table, devices, cpu vendor)
    "t10-bridge": ('[[vms]]\nname = "d2l"\nmemory = "16G"\ncpus = 8\nnetwork = "bridge"\nbridge = "br0"\n'
                   'accel = "kvm"\ndir = "/srv/lfspass/d2l"\ndevices = ["82:00.0"]\n', T10, "intel"),
    "p10-user": ('[[vms]]\nname = "p10"\nmemory = "32G"\ncpus = 8\naccel = "kvm"\ndir = "/srv/lfspass/p10"\n'
                 'devices = ["05:00.0"]\nvnc = { enabled = true, display = 1, password = true }\n', P10, "intel"),
    "nogpu-user": ('[[vms]]\nname = "plain"\nmemory = "2G"\naccel = "tcg"\ndir = "/srv/lfspass/plain"\n'
                   'disk = { size = "20G" }\nlibvirt = true\n', None, "intel"),
    "amd-t10": ('[[vms]]\nname = "amd"\nmemory = "8G"\ncpus = 4\naccel = "kvm"\nrestrict = false\n'
                'dir = "/srv/lfspass/amd"\nmac = "52:54:00:12:34:56"\ndevices = ["10de:1e37"]\n', T10, "amd"),
}


def _plan(tmp_path: Path, case: str):
    body, devs, cpu = CASES[case]
    recipe = load_recipe(write_recipe(tmp_path / case, body, devs, cpu))
    return build_vm_plan(recipe, recipe.vms[0])


def golden_texts(case: str, tmp_path: Path) -> dict[str, str]:
    """Golden file name -> what lfspass makes of the case now (the tmp folder written @TMP@)."""
    plan = _plan(tmp_path, case)
    texts = {f"{case}.argv": "\n".join(build_argv(plan)) + "\n", f"{case}.xml": domain_xml(plan, plan.dir / f"{plan.name}.xml")}
    return {name: text.replace(str(tmp_path), "@TMP@") for name, text in texts.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_argv_and_xml(case, tmp_path):
    """Compared with the committed files only; `python tests/regen_golden.py` rewrites them."""
    for name, text in golden_texts(case, tmp_path / "golden").items():
        path = GOLDEN / name
        assert path.exists(), f"{path} missing: python tests/regen_golden.py, then review it"
        assert text == path.read_text(), f"{path} differs; if the change is meant: python tests/regen_golden.py"
    plan = _plan(tmp_path, case)
    argv = build_argv(plan)
    xml = domain_xml(plan, plan.dir / f"{plan.name}.xml")
    (tmp_path / "d.xml").write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(tmp_path / "d.xml"), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # What the issue promises of every launcher, whatever the case:
    assert "-bios" not in argv and any("readonly=on" in a and "unit=0" in a for a in argv)
    if plan.display:
        assert argv[argv.index("-vnc") + 1].startswith("127.0.0.1:")
    else:   # a compute card (T10, P10) with vnc.enabled unset: the serial console only
        assert "-vnc" not in argv and "-vga" not in argv and "<graphics" not in xml
    # libvirt: the same <uuid> for the same name on every run (a second `virsh define` updates), another
    # for another name; the restricted user NIC, which libvirt does not see, on a slot libvirt never assigns.
    import uuid as uuidlib
    import xml.etree.ElementTree as ET

    dom = ET.fromstring(xml)
    assert dom.findtext("uuid") == str(uuidlib.uuid5(uuidlib.UUID("6c1f0e0a-8a57-5d2f-9f36-1f5a0d7c2e11"), plan.name))
    assert domain_uuid(plan.name) == dom.findtext("uuid") != domain_uuid(plan.name + "-2")
    args = [a.get("value") for a in dom.iter("{http://libvirt.org/schemas/domain/qemu/1.0}arg")]
    nics = [a for a in args if a.startswith("virtio-net-pci,")]
    if plan.vm.network == "user" and plan.vm.restrict:
        assert nics == [f"virtio-net-pci,netdev=lfspassnet0,mac={plan.mac},bus=pcie.0,addr=0x1c"], nics
        assert "user,id=lfspassnet0,restrict=on" in args
    else:
        assert nics == [] and dom.find("devices/interface") is not None
    assert dom.find("devices/serial/log").get("file") == str(plan.dir / "libvirt-serial.log")
    assert f"virsh undefine --keep-nvram {plan.name}" in dom.findtext("description")


def test_passthrough_takes_the_whole_group_and_plugin_quirks(tmp_path):
    t10 = build_argv(_plan(tmp_path, "t10-bridge"))
    assert "vfio-pci,host=0000:82:00.0,bus=rp1,addr=00.0,multifunction=on" in t10
    assert "vfio-pci,host=0000:82:00.1,bus=rp1,addr=00.1" in t10
    assert "bridge,id=net0,br=br0" in t10
    p10 = build_argv(_plan(tmp_path, "p10-user"))
    assert p10[p10.index("-cpu") + 1] == "host,host-phys-bits=on"
    assert "name=opt/ovmf/X-PciMmio64Mb,string=65536" in p10
    assert "127.0.0.1:1,password=on" in p10
    # The P10 plugin's quirk comes through its device hook, for the P10 only.
    from lfspass.plugins import call_device, get_plugin_manager

    plan = _plan(tmp_path / "again", "p10-user")
    quirk = call_device(get_plugin_manager(), "lfspass_qemu_device_args", plan.devices[0], vm=plan.vm)
    assert quirk == ["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=65536"]
    assert not any("X-PciMmio64Mb" in a for a in t10)
    amd = build_argv(_plan(tmp_path, "amd-t10"))
    assert amd[amd.index("-cpu") + 1] == "host,topoext=on"
    assert "user,id=net0" in amd  # restrict = false: the guest may reach the network


def test_bad_vm_name_is_refused_by_the_loader(tmp_path):
    path = write_recipe(tmp_path, '[[vms]]\nname = "d2l; rm -rf /"\n')
    with pytest.raises(RecipeError, match="letters, digits"):
        load_recipe(path)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "vms[0].name", "d2l; rm -rf /")
    assert not (tmp_path / "root").exists()


def test_script_quotes_odd_paths(tmp_path):
    """The .sh hands QEMU exactly the argv, whatever the folder is called."""
    odd = tmp_path / "we ird $(touch pwned) 'q' ;x"
    path = write_recipe(tmp_path, f'[[vms]]\nname = "q"\naccel = "tcg"\ndir = "{odd}"\n'
                                  'extra_args = ["-smbios", "type=1,serial=a b;c"]\n')
    recipe = load_recipe(path)
    plan = build_vm_plan(recipe, recipe.vms[0])
    argv = build_argv(plan)
    fake = tmp_path / "bin" / "qemu-system-x86_64"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    script = tmp_path / "q.sh"
    script.write_text(script_text(plan, argv))
    out = subprocess.run(["sh", str(script), "-S"], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}, check=True).stdout
    assert json.loads(out) == argv[1:] + ["-S"]
    assert not (tmp_path / "pwned").exists()
    assert f"file={odd}/OVMF_VARS.fd" in argv[argv.index("-drive", argv.index("-drive") + 1) + 1]


def test_bad_vm_values_are_one_line_errors(tmp_path):
    cases = [('memory = "lots"', "memory"), ('vnc = { listen = "0.0.0.0" }', "password"),
             ('mac = "01:00:00:00:00:01"', "unicast"), ('devices = ["10de:1e37"]', "not in [[devices]]"),
             ('firmware = { code_url = "http://x/OVMF_CODE.fd" }', "code_sha256"),
             ('firmware = { descriptors = "/nonexistent" }', "apt-get install ovmf")]
    for i, (line, needle) in enumerate(cases):
        path = write_recipe(tmp_path / str(i), f'[[vms]]\nname = "v"\n{line}\n')
        proc = run_doit("vm", f"recipe={path}", cwd=tmp_path / str(i))
        assert_one_error_line(proc, needle)


def test_descriptors_pick_plain_or_secure_boot():
    folder = Path("/usr/share/qemu/firmware")
    plain = find_descriptor(folder)[1]["mapping"]["executable"]["filename"]
    secure = find_descriptor(folder, secure_boot=True)[1]
    assert plain == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    # QEMU's order puts the build with Microsoft's keys enrolled (40-…) first; its CODE is the secboot build.
    assert {"secure-boot", "requires-smm"} <= set(secure["features"])
    assert Path(secure["mapping"]["executable"]["filename"]).resolve().name == "OVMF_CODE_4M.secboot.fd"


def _qemu_io_write(disk: Path) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(disk)], check=True, capture_output=True)


def test_doit_vm_keeps_disk_and_vars_and_reruns_nothing(tmp_path):
    path = write_recipe(tmp_path, '[[vms]]\nname = "g"\naccel = "tcg"\nmemory = "512M"\ndisk = { size = "1G" }\n')
    first = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "root/var/lib/lfspass/vms/g"
    disk, nvram = folder / "g.qcow2", folder / "OVMF_VARS.fd"
    _qemu_io_write(disk)
    with open(nvram, "r+b") as fh:  # the guest wrote a UEFI variable
        fh.seek(4096)
        fh.write(b"guest-boot-entry")
    before = {p.name: p.read_bytes() for p in (disk, nvram)}
    again = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "\n.  " not in "\n" + again.stdout, again.stdout  # every task up to date
    forced = run_doit("--always-execute", "vm", f"recipe={path}", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert {p.name: p.read_bytes() for p in (disk, nvram)} == before
    for name in ("g.sh", "g.xml"):
        assert (folder / name).is_file()
    assert subprocess.run(["virt-xml-validate", str(folder / "g.xml")], capture_output=True).returncode == 0
    # Another size: an error saying how to grow it, the image untouched.
    path.write_text(path.read_text().replace('size = "1G"', 'size = "2G"'))
    grown = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(grown, str(disk), "qemu-img resize", "2G")
    assert disk.read_bytes() == before["g.qcow2"]


def test_iso_media_extracted_and_interactive_launcher(tmp_path):
    tree = tmp_path / "iso/install.amd"
    tree.mkdir(parents=True)
    (tree / "vmlinuz").write_bytes((NETBOOT / "linux").read_bytes())
    (tree / "initrd.gz").write_bytes(b"initrd-stand-in")
    iso = tmp_path / "debian.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", str(iso), str(tmp_path / "iso")],
                   check=True, capture_output=True)
    path = write_recipe(tmp_path, f'[[vms]]\nname = "i"\naccel = "tcg"\n'
                                  f'installer = {{ source = "iso", iso = "{iso}", unattended = false }}\n')
    recipe = load_recipe(path)
    plan = build_vm_plan(recipe, recipe.vms[0])
    extract_iso(plan)
    kernel, initrd = kernel_initrd(plan)
    assert kernel.read_bytes() == (NETBOOT / "linux").read_bytes() and initrd.read_bytes() == b"initrd-stand-in"
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "install:i" not in proc.stdout  # unattended = false: no install task
    text = (plan.dir / "i-install.sh").read_text()
    assert f"media=cdrom,readonly=on,file={iso}" in text and "bootindex=0" in text
    # The recipe drops the installer: the install launcher lfspass wrote goes away...
    with_iso = path.read_text()
    without = with_iso.replace(f'source = "iso", iso = "{iso}", unattended = false', 'source = "none"')
    assert without != with_iso
    path.write_text(without)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (plan.dir / "i-install.sh").exists() and (plan.dir / "i.sh").is_file()
    assert f"removed (the recipe has no installer now) {plan.dir / 'i-install.sh'}" in proc.stdout
    # ...but a file of that name the user wrote stays as it is.
    path.write_text(with_iso)
    assert run_doit("vm", f"recipe={path}", cwd=tmp_path).returncode == 0
    mine = "#!/bin/sh\n# my own installer\n"
    (plan.dir / "i-install.sh").write_text(mine)
    path.write_text(without)
    assert run_doit("vm", f"recipe={path}", cwd=tmp_path).returncode == 0
    assert (plan.dir / "i-install.sh").read_text() == mine


def test_install_runs_once(tmp_path):
    path = write_recipe(tmp_path, '[[vms]]\nname = "n"\naccel = "tcg"\ninstaller = { source = "netboot" }\n')
    recipe = load_recipe(path)
    plan = build_vm_plan(recipe, recipe.vms[0])
    marker_path(plan).parent.mkdir(parents=True)
    marker_path(plan).write_text("{}")
    assert run_install(plan, force=False) is False  # no QEMU started: the marker says it is done
    listed = run_doit("list", "--all", f"recipe={path}", cwd=tmp_path)
    assert "vm:install:n" in listed.stdout


def _read_until(proc: subprocess.Popen, needles: tuple[bytes, ...], limit: float) -> bytes:
    """Read QEMU's stdout until a needle shows up; ``limit`` only stops a hung guest."""
    seen, end = b"", time.monotonic() + limit
    while time.monotonic() < end and not any(n in seen for n in needles):
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.slow
def test_launcher_boots_ovmf_to_uefi_shell(tmp_path):
    path = write_recipe(tmp_path, '[[vms]]\nname = "boot"\naccel = "tcg"\nmemory = "256M"\nnetwork = "none"\n'
                                  'vnc = { enabled = false }\ndisk = { size = "64M" }\n')
    assert run_doit("vm", f"recipe={path}", cwd=tmp_path).returncode == 0
    script = tmp_path / "root/var/lib/lfspass/vms/boot/boot.sh"
    proc = subprocess.Popen(["sh", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = _read_until(proc, (b"Shell>", b"UEFI Interactive Shell"), 240)
    finally:
        proc.kill()
        proc.wait()
    assert b"UEFI Interactive Shell" in out or b"Shell>" in out, out[-2000:]


@pytest.mark.slow
def test_netboot_installer_requests_the_preseed(tmp_path):
    path = write_recipe(tmp_path, '[[vms]]\nname = "inst"\naccel = "tcg"\nmemory = "1G"\nvnc = { enabled = false }\n'
                                  'disk = { size = "2G" }\ninstaller = { source = "netboot" }\n')
    assert run_doit("vm:firmware:inst", "vm:disk:inst", f"recipe={path}", cwd=tmp_path).returncode == 0
    recipe = load_recipe(path)
    plan = build_vm_plan(recipe, recipe.vms[0])
    run = start_install(plan)
    try:
        end = time.monotonic() + 420  # only stops a hung guest (~2 min under TCG)
        while time.monotonic() < end and "GET /preseed.cfg" not in run.server.requests and run.proc.poll() is None:
            time.sleep(2)
    finally:
        run.stop()
    assert "GET /preseed.cfg" in run.server.requests, run.serial_log.read_text(errors="replace")[-3000:]
    assert "restrict=on" in " ".join(run.argv) and "url=http://10.0.2.100/preseed.cfg" in " ".join(run.argv)
    assert run.serial_log.stat().st_size > 0


def test_firmware_from_a_verified_url(tmp_path):
    """code_url/vars_url go through lfspass's downloader; a wrong sum leaves nothing behind."""
    from lfspass.fsutil import sha256_file

    code, tmpl = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    body = (f'[[vms]]\nname = "f"\naccel = "tcg"\n[vms.firmware]\ncode_url = "file://{code}"\n'
            f'code_sha256 = "{sha256_file(code)}"\nvars_url = "{tmpl}"\nvars_sha256 = "{sha256_file(tmpl)}"\n')
    path = write_recipe(tmp_path, body)
    env = {"LFSPASS_CACHE": str(tmp_path / "cache")}
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "root/var/lib/lfspass/vms/f"
    assert (folder / "firmware/OVMF_CODE.fd").read_bytes() == code.read_bytes()
    assert f"file={folder}/firmware/OVMF_CODE.fd" in (folder / "f.sh").read_text()
    bad = write_recipe(tmp_path / "bad", body.replace(sha256_file(code), "0" * 64))
    proc = run_doit("vm", f"recipe={bad}", cwd=tmp_path / "bad", env=env)
    assert_one_error_line(proc, "sha256")
    assert not (tmp_path / "bad/root/var/lib/lfspass/vms/f/firmware/OVMF_CODE.fd").exists()


def test_plugins_add_vm_args_and_cpu_flags(tmp_path):
    """lfspass_qemu_vm_args and host-wide lfspass_cpu_flags reach the argv (and the XML)."""
    from lfspass import hookimpl
    from lfspass.plugins import get_plugin_manager

    class Extra:
        @hookimpl
        def lfspass_pci_ids(self):
            return []

        @hookimpl
        def lfspass_qemu_vm_args(self, vm):
            return ["-rtc", "base=localtime"]

        @hookimpl
        def lfspass_cpu_flags(self, vm, device):
            return ["kvm=off"] if device is None else None

    pm = get_plugin_manager()
    pm.register(Extra(), name="test-extra")
    try:
        plan = _plan(tmp_path, "t10-bridge")
    finally:
        pm.unregister(name="test-extra")
    argv = build_argv(plan)
    assert argv[argv.index("-cpu") + 1] == "host,kvm=off"
    assert argv[argv.index("-rtc") + 1] == "base=localtime"
    xml = domain_xml(plan, plan.dir / "d2l.xml")
    assert '<qemu:arg value="host-x86_64-cpu.kvm=off"/>' in xml and '<qemu:arg value="base=localtime"/>' in xml


def test_preseed_is_valid_debconf(tmp_path):
    from lfspass.vm.install import DONE_MARKER, preseed_text

    path = write_recipe(tmp_path, '[[vms]]\nname = "p"\ninstaller = { source = "netboot", ssh_key = "ssh-ed25519 AAAA x@y" }\n')
    recipe = load_recipe(path)
    text = preseed_text(build_vm_plan(recipe, recipe.vms[0]))
    (tmp_path / "preseed.cfg").write_text(text)
    proc = subprocess.run(["debconf-set-selections", "-c", str(tmp_path / "preseed.cfg")], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert "netcfg/hostname string p\n" in text and DONE_MARKER in text and "ssh-ed25519 AAAA x@y" in text


def test_lab_recipe_leaves_a_valid_launcher(tmp_path):
    """The acceptance run: `doit recipe=recipes/lab.toml vm` (on a copy, so the repo's build/ stays alone)."""
    (tmp_path / "recipes").mkdir()
    lab = tmp_path / "recipes/lab.toml"
    # The image guest (issue 14) takes minutes to build: tests/vm/test_image.py runs it once per session.
    lab.write_text((REPO / "recipes/lab.toml").read_text().split("\n# An image guest (issue 14)")[0])
    assert "vm " in run_doit("list", f"recipe={lab}", cwd=tmp_path).stdout
    proc = run_doit("vm", f"recipe={lab}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "build/lab/root/var/lib/lfspass/vms/lab-guest"
    script = (folder / "lab-guest.sh").read_text()
    assert "if=pflash,format=raw,unit=0,readonly=on,file=" in script and "-bios" not in script
    assert "-vnc 127.0.0.1:0" in script and "restrict=on" in script
    assert subprocess.run(["virt-xml-validate", str(folder / "lab-guest.xml")], capture_output=True).returncode == 0


def test_failed_install_is_one_error_and_leaves_no_marker(tmp_path):
    """QEMU refusing the installer kernel: the task fails with the logs named, and will run again."""
    media = tmp_path / "media"
    media.mkdir()
    (media / "linux").write_bytes(b"not a kernel")
    (media / "initrd.gz").write_bytes(b"not an initrd")
    path = write_recipe(tmp_path, f'[[vms]]\nname = "x"\naccel = "tcg"\nmemory = "256M"\nvnc = {{ enabled = false }}\n'
                                  f'disk = {{ size = "64M" }}\ninstaller = {{ source = "netboot", netboot = "{media}" }}\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "install did not finish", "serial.log", "LFSPASS_REINSTALL=1")
    folder = tmp_path / "root/var/lib/lfspass/vms/x"
    assert not (folder / "installed.json").exists()
    assert "guestfwd=tcp:10.0.2.100:80-cmd:" in (folder / "install/qemu-argv.json").read_text()
