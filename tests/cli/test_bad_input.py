"""Bad input, as a fuzzer would send it: every case is one `error:` line, no traceback, nothing written.

Recipe cases load the recipe and plan every VM the way `doit vm` does (in process: the
error must be an LfspassError, never another exception); a sample goes through real doit
runs.  Command-line cases run `lfspass` as a user would.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_cli, run_doit
from lfspass.errors import LfspassError
from lfspass.plan import resolve_devices
from lfspass.recipe import load_recipe
from lfspass.vm.preflight import preflight
from lfspass.vm.plan import build_vm_plan

sys.path.insert(0, str(REPO / "tests"))
from make_fixtures import Dev, write_root

M = 1 << 20
T10 = [Dev("0000:82:00.0", "10de:1e37", 0x030200, "10de:1370", 0xa1, "vfio-pci", 40, 1, [(0, 16 * M, 0x40200)])]
LONG = "x" * 300
VM = '[[vms]]\nname = "g"\naccel = "tcg"\n'

# (id, recipe text after [host]/[kernel], words the one error line must hold)
RECIPES = [
    ("unknown-key", 'colour = "blue"\n', ["unknown key", "colour"]),
    ("cpus-zero", VM + "cpus = 0\n", ["cpus = 0", "1 to 1024"]),
    ("cpus-huge", VM + "cpus = 100000\n", ["cpus"]),
    ("cpus-string", VM + 'cpus = "2"\n', ["expected an integer"]),
    ("memory-word", VM + 'memory = "lots"\n', ["memory", "512M"]),
    ("memory-zero", VM + 'memory = "0"\n', ["memory"]),
    ("memory-tiny", VM + 'memory = "1M"\n', ["64M"]),
    ("memory-negative", VM + 'memory = "-4G"\n', ["memory"]),
    ("disk-size-bad", VM + 'disk = { size = "64Q" }\n', ["disk.size"]),
    ("name-slash", '[[vms]]\nname = "../evil"\n', ["vms[0].name"]),
    ("name-empty", '[[vms]]\nname = ""\n', ["vms[0].name"]),
    ("name-newline", '[[vms]]\nname = "a\\nb"\n', ["control characters"]),
    ("name-too-long", f'[[vms]]\nname = "{LONG}"\n', ["vms[0].name"]),
    ("name-duplicate", VM + VM, ["unique"]),
    ("mac-multicast", VM + 'mac = "01:00:5e:00:00:01"\n', ["mac"]),
    ("mac-garbage", VM + 'mac = "zz"\n', ["mac"]),
    ("bridge-long", VM + 'network = "bridge"\nbridge = "br0-with-a-very-long-name"\n', ["bridge"]),
    ("network-choice", VM + 'network = "wifi"\n', ["user, bridge, none"]),
    ("accel-choice", '[[vms]]\nname = "g"\naccel = "hvf"\n', ["auto, kvm, tcg"]),
    ("vnc-display", VM + "vnc = { display = 100 }\n", ["display", "0 to 99"]),
    ("vnc-listen-newline", VM + 'vnc = { listen = "127.0.0.1\\nrm -rf /" }\n', ["control characters"]),
    ("vnc-listen-garbage", VM + 'vnc = { listen = "a b" }\n', ["vnc.listen"]),
    ("vnc-open-no-password", VM + 'vnc = { listen = "0.0.0.0", password = true }\n', ["password_file"]),
    ("vnc-password-file-missing", VM + 'vnc = { password_file = "nope.pass" }\n', ["no such file"]),
    ("firmware-url-no-sha", VM + 'firmware = { code_url = "http://h/OVMF_CODE.fd" }\n', ["code_sha256"]),
    ("firmware-sha-short", VM + 'firmware = { code_url = "http://h/c.fd", code_sha256 = "abc" }\n', ["64 hex"]),
    ("firmware-code-missing", VM + 'firmware = { code = "/nonexistent/OVMF_CODE.fd" }\n', ["no such file"]),
    ("iso-url-scheme", VM + 'installer = { source = "iso", iso_url = "ftp://h/x.iso", iso_sha256 = "' + "a" * 64 + '" }\n',
     ["iso_url"]),
    ("iso-unverified", VM + 'installer = { source = "iso", iso_url = "http://h/x.iso" }\n', ["iso_sha256"]),
    ("iso-missing", VM + 'installer = { source = "iso", iso = "/nonexistent.iso" }\n', ["no such file"]),
    ("installer-user", VM + 'installer = { source = "netboot", user = "Root Admin" }\n', ["installer.user"]),
    ("installer-hash-quote", VM + "installer = { source = \"netboot\", password_hash = \"a'b\" }\n", ["password_hash"]),
    ("installer-hash-garbage", VM + 'installer = { source = "netboot", password_hash = "hunter2" }\n', ["password_hash"]),
    ("installer-ssh-key-command", VM + 'installer = { source = "netboot", ssh_key = "x; reboot" }\n', ["ssh_key"]),
    ("installer-timeout", VM + 'installer = { source = "netboot", timeout = 0 }\n', ["timeout"]),
    ("installer-silence", VM + 'installer = { source = "netboot", silence = -1 }\n', ["silence"]),
    ("installer-mirror", VM + 'installer = { source = "netboot", mirror = "deb example" }\n', ["mirror"]),
    ("installer-source", VM + 'installer = { source = "floppy" }\n', ["installer.source"]),
    ("vm-device-not-listed", '[[vms]]\nname = "g"\naccel = "tcg"\ndevices = ["05:00.0"]\n', ["not in [[devices]]"]),
    ("vm-device-garbage", '[[vms]]\nname = "g"\naccel = "tcg"\ndevices = ["gpu"]\n', ["devices[0]"]),
    ("device-bad-address", '[[devices]]\naddress = "82:00"\n', ["address"]),
    ("device-bad-id", '[[devices]]\nid = "nvidia"\n', ["id"]),
    ("device-empty", '[[devices]]\nname = "gpu"\n', ["needs 'address'"]),
    ("device-duplicate", '[[devices]]\naddress = "82:00.0"\n[[devices]]\naddress = "0000:82:00.0"\n', ["repeats"]),
    ("device-id-disagrees", '[[devices]]\naddress = "82:00.0"\nid = "10de:1b39"\n', ["82:00.0", "10de:1b39", "10de:1e37"]),
    ("grub-cfg-absolute", '[boot]\ngrub_cfg = "/etc/grub.cfg"\n', ["grub_cfg", "relative"]),
    ("grub-cfg-dotdot", '[boot]\ngrub_cfg = "boot/../../etc/grub.cfg"\n', ["grub_cfg"]),
    ("kernel-jobs", '[kernel]\njobs = -1\n', ["jobs"]),
    ("kernel-config-lower", '[kernel]\nconfig = { vfio = "m" }\n', ["upper case"]),
    ("kernel-config-newline", '[kernel]\nconfig = { VFIO = "m\\nFOO=y" }\n', ["control characters"]),
    ("lab-timeout", '[lab]\ntimeout = 0\n', ["lab.timeout"]),
    ("lab-memory", '[lab]\nmemory = "big"\n', ["lab.memory"]),
    ("host-init", '[host]\ninit = "openrc"\n', ["sysvinit, systemd"]),
    ("path-too-long", VM + f'dir = "/tmp/{LONG}"\n', ["longer than a path may be"]),
    ("table-not-table", VM + 'firmware = "ovmf"\n', ["expected a table"]),
    ("bool-as-string", VM + 'restrict = "yes"\n', ["true or false"]),
]


def _recipe(tmp_path: Path, body: str) -> Path:
    sysroot = write_root(tmp_path / "sysroot", T10, cmdline="intel_iommu=on", cpuinfo="flags: vmx\n", dmesg=None,
                         release="6.10.5", config=None, modules_dep="", modules_builtin="")
    head = f'[host]\nroot = "root"\nsysfs_root = "{sysroot}"\n'
    if body.startswith("[host]\n"):
        head, body = head + body[len("[host]\n"):], ""
    path = tmp_path / "r.toml"
    path.write_text(head + ('[kernel]\nversion = "6.10.5"\n' if "[kernel]" not in body else "") + body)
    return path


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if ".doit.db" not in p.name}


def _plan_all(path: Path) -> None:
    """What `doit vm` does before writing: load, resolve devices, plan and check every VM."""
    recipe = load_recipe(path)
    resolve_devices(recipe)
    for vm in recipe.vms:
        preflight(build_vm_plan(recipe, vm))


@pytest.mark.parametrize("body, needles", [c[1:] for c in RECIPES], ids=[c[0] for c in RECIPES])
def test_bad_recipe_is_one_clear_error(tmp_path, body, needles):
    path = _recipe(tmp_path, body)
    before = _files(tmp_path)
    with pytest.raises(LfspassError) as err:
        _plan_all(path)
    line = err.value.one_line()
    assert str(path) in line or "vms" in line or "devices" in line, line
    for needle in needles:
        assert needle in line, line
    assert _files(tmp_path) == before


@pytest.mark.parametrize("case", ["cpus-zero", "vnc-open-no-password", "device-id-disagrees", "grub-cfg-dotdot"])
def test_bad_recipe_through_doit(tmp_path, case):
    body, needles = next(c[1:] for c in RECIPES if c[0] == case)
    path = _recipe(tmp_path, body)
    before = _files(tmp_path)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, *needles)
    assert _files(tmp_path) == before


def test_recipe_not_utf8(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b'[host]\nname = "h\xff\xfe"\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "not UTF-8")


def test_vms_dir_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    path = _recipe(tmp_path, VM + f'dir = "{tmp_path / "afile"}"\n')
    before = _files(tmp_path)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "is a file, not a folder")
    assert _files(tmp_path) == before


def test_second_vm_failing_writes_nothing_for_the_first(tmp_path):
    """OVMF_VARS.fd of a good VM must not appear when a later VM of the recipe is refused."""
    path = _recipe(tmp_path, VM + 'disk = { size = "64M" }\n[[vms]]\nname = "h"\naccel = "tcg"\nvnc = { display = 7 }\n'
                             'disk = { path = "' + str(tmp_path / "h.qcow2") + '", size = "128M" }\n')
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "h.qcow2"), "64M"], check=True)
    before = _files(tmp_path)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "h.qcow2", "qemu-img resize")
    assert _files(tmp_path) == before


# -- garbled host roots: findings, not crashes ----------------------------------------------------

def _garbled_root(tmp_path: Path) -> Path:
    root = write_root(tmp_path / "host", T10, cmdline="intel_iommu=on", cpuinfo="flags: vmx\n", dmesg=None,
                      release="6.10.5", config=None, modules_dep="", modules_builtin="")
    groups = root / "sys/kernel/iommu_groups"
    (groups / "\u00b2").mkdir(parents=True)         # '²'.isdigit() is True, int('²') fails
    (groups / "\u0663/devices").mkdir(parents=True)  # Arabic-Indic three
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/config.gz").write_bytes(gzip.compress(b"CONFIG_VFIO=m\n" * 50)[:40] + b"\0garbage" * 8)
    return root


@pytest.mark.parametrize("command", [["groups"], ["groups", "--json"], ["doctor"]])
def test_garbled_host_root_is_reported_not_a_crash(tmp_path, command):
    root = _garbled_root(tmp_path)
    proc = run_cli(*command, "--host-root", str(root))
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode in (0, 1), proc.stderr  # a verdict (pass or findings), not bad input
    if command == ["doctor"]:
        assert "WARN  iommu" in proc.stdout and "not group numbers" in proc.stdout, proc.stdout


# -- the command line --------------------------------------------------------------------------

SHA = "a" * 64
CLI = [
    ("no-command", [], {}, ["no command given"], 2),
    ("unknown-command", ["frobnicate"], {}, ["invalid choice"], 2),
    ("unknown-flag", ["--bogus"], {}, ["unrecognized arguments"], 2),
    ("fetch-no-url", ["fetch"], {}, ["URL"], 2),
    ("fetch-no-sum", ["fetch", "http://127.0.0.1:9/x.iso"], {}, ["--sha256"], 2),
    ("fetch-bad-sha", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", "xyz"], {}, ["64 hex"], 2),
    ("fetch-sha-and-sums", ["fetch", "http://127.0.0.1:9/x", "--sha256", SHA, "--sums", "http://127.0.0.1:9/S"], {},
     ["not both"], 2),
    ("fetch-signature-alone", ["fetch", "http://127.0.0.1:9/x", "--sha256", SHA, "--signature", "s"], {},
     ["--sums"], 2),
    ("fetch-o-empty", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", SHA, "-o", ""], {}, ["-o ''"], 2),
    ("fetch-o-folder", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", SHA, "-o", "@TMP@"], {}, ["is a folder"], 2),
    ("fetch-timeout-nan", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", SHA], {"LFSPASS_TIMEOUT": "nan"},
     ["LFSPASS_TIMEOUT"], 2),
    ("fetch-timeout-negative", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", SHA], {"LFSPASS_TIMEOUT": "5,-1"},
     ["LFSPASS_TIMEOUT"], 2),
    ("fetch-retries-negative", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", SHA], {"LFSPASS_RETRIES": "-3"},
     ["LFSPASS_RETRIES"], 2),
    ("fetch-retries-word", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", SHA], {"LFSPASS_RETRIES": "many"},
     ["LFSPASS_RETRIES"], 2),
    ("fetch-ipv6-unbalanced", ["fetch", "http://[::1/x.iso", "--sha256", SHA], {}, ["not a valid URL"], 2),
    ("fetch-bad-port", ["fetch", "http://127.0.0.1:99999/x.iso", "--sha256", SHA], {}, ["not a valid URL"], 2),
    ("fetch-no-host", ["fetch", "http:///x.iso", "--sha256", SHA], {}, ["no host name"], 2),
    ("fetch-scheme", ["fetch", "ftp://h/x.iso", "--sha256", SHA], {}, ["unsupported scheme"], 2),
    ("fetch-empty-url", ["fetch", "", "--sha256", SHA], {}, ["not a URL or path"], 2),
    ("fetch-max-size-zero", ["fetch", "http://127.0.0.1:9/x", "--sha256", SHA, "--max-size", "0"], {}, ["--max-size"], 2),
    ("fetch-max-size-word", ["fetch", "http://127.0.0.1:9/x", "--sha256", SHA], {"LFSPASS_MAX_SIZE": "huge"},
     ["LFSPASS_MAX_SIZE"], 2),
    ("fetch-keyring-missing", ["fetch", "http://127.0.0.1:9/x", "--sums", "http://127.0.0.1:9/S", "--keyring", "/nope"],
     {}, ["--keyring"], 2),
    ("fetch-local-missing", ["fetch", "/nonexistent/x.iso", "--sha256", SHA, "-o", "@TMP@/x.iso"], {}, ["no such file"], 2),
    ("fetch-refused", ["fetch", "http://127.0.0.1:9/x.iso", "--sha256", SHA, "-o", "@TMP@/x.iso"],
     {"LFSPASS_RETRIES": "0"}, ["cannot download"], 1),
    ("fetch-cache-empty", ["fetch", "@TMP@/../f", "--sha256", SHA, "--cache", ""], {}, ["--cache"], 2),
    ("fetch-cache-a-file", ["fetch", "@TMP@/../f", "--sha256", SHA, "--cache", "@TMP@/../f"], {}, ["--cache"], 2),
    ("fetch-source-a-folder", ["fetch", "@TMP@/..", "--sha256", SHA, "-o", "@TMP@/x"], {}, ["a folder"], 2),
    ("fetch-url-space", ["fetch", "http://exa mple.com/x", "--sha256", SHA], {}, ["no spaces"], 2),
    ("fetch-o-too-long", ["fetch", "@TMP@/../f", "--sha256", SHA, "-o", "y" * 300], {}, ["255 bytes"], 2),
    ("fetch-sha-mismatch", ["fetch", "@TMP@/../f", "--sha256", SHA, "-o", "@TMP@/x"], {}, ["sha256 mismatch"], 1),
    ("kconfig-no-tree", ["kconfig", "--tree", "/nonexistent", "--config", "@TMP@/c"], {}, ["--tree"], 2),
    ("kconfig-bad-set", ["kconfig", "--tree", "@TMP@", "--config", "@TMP@/c", "--set", "FOO"], {}, ["--set"], 2),
    ("groups-no-root", ["groups", "--host-root", "/nonexistent"], {}, ["/nonexistent"], 2),
    ("doctor-bad-recipe", ["doctor", "--recipe", "/nonexistent.toml"], {}, ["no such recipe"], 2),
    ("bind-no-device", ["bind"], {}, ["DEV"], 2),
    ("bind-address-cut", ["bind", "82:00", "--host-root", "@TMP@/.."], {}, ["'82:00' is malformed", "82:00.0"], 2),
    ("bind-address-garbage", ["bind", "0000:zz:00.0", "--host-root", "@TMP@/.."], {}, ["is malformed"], 2),
    ("bind-word", ["bind", "gpu", "--host-root", "@TMP@/.."], {}, ["'gpu' is not a PCI address", "--recipe"], 2),
    ("bind-id-without-recipe", ["bind", "10de:1e37", "--host-root", "@TMP@/.."], {}, ["give --recipe"], 2),
    ("bind-no-root", ["bind", "82:00.0", "--host-root", "/nonexistent"], {}, ["/nonexistent"], 2),
    ("bind-root-not-a-host", ["bind", "82:00.0", "--host-root", "@TMP@"], {}, ["not a host root"], 2),
    ("bind-bad-recipe", ["bind", "82:00.0", "--recipe", "/nonexistent.toml"], {}, ["no such recipe"], 2),
    ("release-no-device", ["release", "--host-root", "@TMP@/.."], {}, ["DEV"], 2),
    ("release-word", ["release", "my card", "--host-root", "@TMP@/.."], {}, ["'my card' is not a PCI address"], 2),
]


@pytest.mark.parametrize("args, env, needles, code", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_bad_command_line_is_one_clear_error(tmp_path, args, env, needles, code):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "f").write_text("a local file\n")
    args = [a.replace("@TMP@", str(work)) for a in args]
    proc = run_cli(*args, cwd=work, env={"LFSPASS_CACHE": str(tmp_path / "cache"), **env})
    assert_one_error_line(proc, *needles)
    assert proc.returncode == code, proc.stderr
    assert list(work.iterdir()) == []  # nothing written, not even a .part or a lock
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json"))


def test_kconfig_config_that_is_binary(tmp_path):
    """A --config that is not text: one error line, the file untouched."""
    tree = tmp_path / "tree"
    (tree / "arch/x86").mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 6\n")
    for kconfig in (tree / "Kconfig", tree / "arch/x86/Kconfig"):
        kconfig.write_text('config VFIO\n\ttristate "vfio"\n')
    config = tmp_path / "config.bin"
    config.write_bytes(os.urandom(4096))
    before = config.read_bytes()
    proc = run_cli("kconfig", "--tree", str(tree), "--config", str(config), "--set", "VFIO=m")
    assert_one_error_line(proc, "not a text .config")
    assert config.read_bytes() == before


def test_binary_entry_template(tmp_path):
    (tmp_path / "tmpl.j2").write_bytes(b"\xfa\xfb\x00" + os.urandom(512))
    path = _recipe(tmp_path, '[boot]\nentry_template = "tmpl.j2"\nroot_device = "/dev/vda1"\n')
    before = _files(tmp_path)
    proc = run_doit("grub", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "tmpl.j2", "not UTF-8")
    assert _files(tmp_path) == before


def test_garbage_kernel_tarball(tmp_path):
    """A kernel source that is not a readable tarball: one line naming it, nothing built or installed."""
    (tmp_path / "linux-9.9.tar.xz").write_bytes(bytes(range(256)) * 20)
    path = tmp_path / "r.toml"
    path.write_text('[host]\nroot = "root"\n[kernel]\nsource = "linux-9.9.tar.xz"\n[boot]\nroot_device = "/dev/vda"\n')
    proc = run_doit("kernel", f"recipe={path}", cwd=tmp_path)
    assert_one_error_line(proc, "linux-9.9.tar.xz", "not a readable tarball")
    assert not (tmp_path / "root").exists() and not (tmp_path / "build").exists()
