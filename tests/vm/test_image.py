"""installer.source = "image": the lab's image guest built from the archive, booted once, rebuilt byte for byte."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit
from lfspass.errors import CheckFailed, ToolFailed, VmError
from lfspass.recipe import load_recipe
from lfspass.vm.image.first_boot import first_boot
from lfspass.vm.firmware import prepare_vars
from lfspass.vm.image.packages import explain, host_mirror, host_sources, host_suite, image_epoch
from lfspass.vm.image.disk import SECTOR, Ids, layout
from lfspass.vm.plan import build_vm_plan

CACHE = REPO / "build/test-cache/apt-archives"       # one apt cache for every build of the session
VM = "lab-image"
ENV = {"LFSPASS_APT_CACHE": str(CACHE)}


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_recipe(folder: Path, vm: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "r.toml"
    path.write_text(f'[host]\nroot = "root"\n[kernel]\nversion = "6.10.5"\ntimestamp = "2024-01-01 00:00:00 UTC"\n'
                    f'[[vms]]\nname = "img"\naccel = "tcg"\nmemory = "1G"\ncpus = 1\nvnc = {{ enabled = false }}\n'
                    f'disk = {{ size = "2G" }}\n{vm}')
    return path


@pytest.fixture(scope="session")
def lab_image():
    """`doit vm` on a copy of recipes/lab.toml (the acceptance run), from a clean folder, timed.

    The folder is this session's own (two sessions may run at once); the apt cache is shared.
    It is not under pytest's temp root: every pytest run sets that back to 0700, which would
    shut libvirt's QEMU user out in the middle of the libvirt test (last in this file).
    """
    LAB_COPY = Path(tempfile.mkdtemp(prefix="lfspass-image-lab-", dir="/var/tmp"))   # 0700, ours alone
    yield from _lab_image(LAB_COPY)
    shutil.rmtree(LAB_COPY, ignore_errors=True)


def _lab_image(LAB_COPY: Path):
    (LAB_COPY / "recipes").mkdir(parents=True)
    recipe = LAB_COPY / "recipes/lab.toml"
    recipe.write_text((REPO / "recipes/lab.toml").read_text())
    started = time.monotonic()
    proc = run_doit("vm", f"recipe={recipe}", cwd=LAB_COPY, env=ENV)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = LAB_COPY / "build/lab/root/var/lib/lfspass/vms" / VM
    print(f"\nlab image guest: doit vm took {seconds:.0f} s")
    yield {"proc": proc, "seconds": seconds, "folder": folder, "disk": folder / f"{VM}.qcow2", "recipe": recipe,
           "installed": json.loads((folder / "installed.json").read_text()), "top": LAB_COPY}


# --- fast: the parts that read the host and the recipe ------------------------------------------

def test_host_sources_deb822_and_one_line(tmp_path):
    (tmp_path / "sources.list.d").mkdir(parents=True)
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://a.example/debian-security\nSuites: bookworm-security\n")
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://b.example/debian trixie main\n")
    assert host_sources(tmp_path) == [("http://a.example/debian", ["bookworm", "bookworm-updates"]),
                                      ("http://a.example/debian-security", ["bookworm-security"]),
                                      ("http://b.example/debian", ["trixie"])]
    assert host_mirror("trixie", tmp_path) == "http://b.example/debian"
    assert host_mirror("bookworm", tmp_path) == "http://a.example/debian"


def test_host_release_and_mirror_of_this_machine():
    suite = host_suite()
    assert re.fullmatch(r"[a-z]+", suite)
    assert host_mirror(suite).startswith(("http://", "https://", "file:/"))


def test_timestamp_from_recipe_or_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert image_epoch("2024-01-01 00:00:00 UTC") == (1704067200, "[kernel] timestamp")
    assert image_epoch("") == (1700000000, "SOURCE_DATE_EPOCH")


def test_failure_causes_are_named():
    """A package the archive lacks is the recipe's (exit 2); an archive or disk mmdebstrap could not use, a tool's (3)."""
    log = Path("/x/image-build.log")
    missing = explain("E: Unable to locate package nosuch\n", "bookworm", "M", log)
    assert "package 'nosuch' does not exist" in str(missing) and isinstance(missing, VmError) and missing.exit_code == 2
    unreachable = explain("E: Failed to fetch http://M/dists/bookworm/InRelease\n", "bookworm", "M", log)
    assert "cannot be reached" in str(unreachable) and isinstance(unreachable, ToolFailed) and unreachable.exit_code == 3
    full = explain("tar: write error: No space left on device\n", "bookworm", "M", log)
    assert "full" in str(full) and isinstance(full, ToolFailed)


def test_identifiers_fixed_per_vm_and_layout():
    assert Ids.for_vm("a") == Ids.for_vm("a") and Ids.for_vm("a").disk != Ids.for_vm("b").disk
    esp_start, esp_len, root_start, root_len = layout(2 << 30)
    assert esp_start * SECTOR == 1 << 20 and root_start == esp_start + esp_len
    assert (root_start + root_len + 33) * SECTOR <= 2 << 30


def test_image_vm_has_install_task_and_no_empty_disk(tmp_path):
    path = write_recipe(tmp_path, 'installer = { source = "image", suite = "bookworm", packages = ["less"] }\n')
    recipe = load_recipe(path)
    assert recipe.vms[0].installer.packages == ["less"]
    listing = run_doit("list", "--all", f"recipe={path}", cwd=tmp_path).stdout
    assert "vm:install:img " in listing and "vm:disk:img" not in listing


def test_existing_disk_is_left_byte_identical(tmp_path):
    path = write_recipe(tmp_path, 'installer = { source = "image" }\n')
    folder = tmp_path / "root/var/lib/lfspass/vms/img"
    folder.mkdir(parents=True)
    disk = folder / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "2G"], check=True)
    with open(disk, "r+b") as fh:   # some guest data at the end of the file
        fh.seek(0, 2)
        fh.write(os.urandom(4096))
    before = _sha(disk)
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "exists: left as it is, byte for byte" in proc.stdout
    assert _sha(disk) == before and not (folder / "installed.json").exists()
    assert not list(folder.glob(".img.qcow2.*"))


def test_unreachable_archive_is_one_error_and_no_disk(tmp_path):
    path = write_recipe(tmp_path, 'installer = { source = "image", mirror = "http://127.0.0.1:9/debian" }\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path, env=ENV)
    assert_one_error_line(proc, "cannot be reached", "image-build.log")
    folder = tmp_path / "root/var/lib/lfspass/vms/img"
    assert not (folder / "img.qcow2").exists() and not list(folder.glob(".img*"))
    assert (folder / "image-build.log").stat().st_size > 0


def test_a_disk_that_does_not_boot_times_out_naming_the_log(tmp_path):
    """An empty disk never says the marker: one error naming the serial log, QEMU stopped."""
    path = write_recipe(tmp_path, 'installer = { source = "image" }\n')
    recipe = load_recipe(path)
    plan = build_vm_plan(recipe, recipe.vms[0])
    plan.dir.mkdir(parents=True)
    prepare_vars(plan.firmware)
    disk = tmp_path / "empty.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    before = _sha(disk)
    with pytest.raises(CheckFailed) as err:   # the guest never said its marker: exit 1
        first_boot(plan, disk, tmp_path / "boot", 15, lambda s: None)
    line = err.value.one_line()
    assert "did not boot" in line and "first-boot-serial.log" in line, line
    assert _sha(disk) == before
    assert not subprocess.run(["pgrep", "-f", f"file={disk}"], capture_output=True).stdout


# --- slow: real mmdebstrap, disk assembly and a TCG boot under OVMF -----------------------------
# mmdebstrap reads the host's Debian archive even with every package cached: marker `network`.

@pytest.mark.slow
@pytest.mark.network("debian")
def test_unknown_package_is_one_error_and_no_disk(tmp_path):
    """apt resolves against the host's real archive and finds no such package: one line, no disk."""
    path = write_recipe(tmp_path, 'installer = { source = "image", packages = ["lfspass-no-such-package"] }\n')
    proc = run_doit("vm", f"recipe={path}", cwd=tmp_path, env=ENV)
    assert_one_error_line(proc, "'lfspass-no-such-package' does not exist", "installer.packages", "image-build.log")
    folder = tmp_path / "root/var/lib/lfspass/vms/img"
    assert not (folder / "img.qcow2").exists() and not list(folder.glob(".img*"))
    assert not (folder / ".image-build").exists() and not (folder / "installed.json").exists()


@pytest.mark.slow
@pytest.mark.network("debian")
def test_lab_image_guest_built_and_booted(lab_image):
    info = lab_image["installed"]
    assert info["marker"].startswith("lfspass-first-boot: reached multi-user.target")
    assert info["image_sha256"] == _sha(lab_image["disk"])
    for pkg in ("linux-image-amd64", "systemd-sysv", "openssh-server", "dbus"):
        assert info["packages"].get(pkg), pkg
    assert info["boot_seconds"] > 0 and Path(info["build_log"]).stat().st_size > 0
    # The guest-side check, said by the guest on its serial line before the marker: its own PCI devices.
    seen = {(d["class"], d["driver"]) for d in info["guest_check"]["pci"]}
    assert {("0200", "virtio-pci"), ("0100", "virtio-pci")} <= seen, seen   # the VM's NIC and disk, bound
    assert info["guest_check"]["nvidia_smi"] == {"installed": False, "exit": None, "lines": []}
    # The check boot ran on -snapshot: the VM's VARS copy is still its template, byte for byte.
    recipe = load_recipe(lab_image["recipe"])
    fw = build_vm_plan(recipe, next(v for v in recipe.vms if v.name == VM)).firmware
    assert _sha(fw.vars) == _sha(fw.vars_template)
    out = lab_image["proc"].stdout
    for stage in ("resolving packages:", "downloading:", "unpacking:", "installing packages:", "assembling:",
                  "first boot: marker after", "first boot: the guest sees"):
        assert f"{VM}: {stage}" in out, stage
    # One run says the time it took; the README's lab table quotes it.
    assert lab_image["seconds"] < 20 * 60


@pytest.mark.slow
@pytest.mark.network("debian")
def test_lab_image_guest_contents(lab_image, tmp_path):
    """fstab by UUID, no baked SSH host keys, GRUB config by UUID, the user, a GPT with the fixed GUIDs."""
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(lab_image["disk"]), str(raw)], check=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    ids = Ids.for_vm(VM)
    assert table["label"] == "gpt" and table["id"].lower() == ids.disk
    esp, root = table["partitions"]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and root["uuid"].lower() == ids.root_part
    part = tmp_path / "root.img"
    subprocess.run(["dd", f"if={raw}", f"of={part}", "bs=1M", f"skip={root['start'] // 2048}",
                    f"count={root['size'] // 2048}", "conv=sparse", "status=none"], check=True)

    def cat(p: str) -> str:
        return subprocess.run(["debugfs", "-R", f"cat {p}", str(part)], capture_output=True, text=True).stdout

    assert f"UUID={ids.root_fs} / ext4" in cat("/etc/fstab")
    assert f"root=UUID={ids.root_fs}" in cat("/boot/grub/grub.cfg") and "console=ttyS0" in cat("/boot/grub/grub.cfg")
    assert cat("/etc/hostname") == f"{VM}\n"
    assert "debian:" in cat("/etc/passwd")
    ssh = subprocess.run(["debugfs", "-R", "ls /etc/ssh", str(part)], capture_output=True, text=True).stdout
    assert "sshd_config" in ssh and "ssh_host_" not in ssh
    assert "ssh-keygen -A" in cat("/etc/systemd/system/lfspass-ssh-host-keys.service")


@pytest.mark.slow
@pytest.mark.network("debian")
def test_second_build_same_bytes_from_the_cache(lab_image, tmp_path, monkeypatch):
    """Reproducible: the same VM built again (shared apt cache: nothing downloaded) gives the same qcow2."""
    from lfspass.vm.image.build import build_disk, build_tree

    recipe = load_recipe(lab_image["recipe"])
    plan = build_vm_plan(recipe, next(v for v in recipe.vms if v.name == VM))
    plan = dataclasses.replace(plan, dir=tmp_path / "vm")
    plan.dir.mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("LFSPASS_APT_CACHE", str(CACHE))
    lines: list[str] = []
    epoch = lab_image["installed"]["timestamp"]
    with open(tmp_path / "build.log", "w") as log:
        tree, facts = build_tree(plan, tmp_path / "work", epoch, log, lines.append)
        disk = build_disk(plan, tree, tmp_path / "work", tmp_path / "again.qcow2", epoch, log, lines.append)
    first = lab_image["installed"]
    assert facts["downloaded_bytes"] == 0, lines
    assert facts["packages"] == first["packages"]
    same_tree = (plan.dir / "image-tree.txt").read_text() == Path(first["tree_listing"]).read_text()
    assert same_tree, "the two builds' file trees differ: diff the two image-tree.txt files"
    assert disk["raw_sha256"] == first["raw_sha256"]
    assert disk["image_sha256"] == first["image_sha256"]


# --- slow, last (it boots the lab image's disk for real, after the tests above read it) ---------

def _virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 or not check, f"virsh {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory):
    """libvirt's system daemons: the running ones, else virtlogd and libvirtd started here by hand
    (CI containers run no systemd) and stopped again at the end of the session."""
    if _virsh("version", check=False).returncode == 0:
        yield
        return
    missing = [tool for tool in ("libvirtd", "virtlogd") if not Path("/usr/sbin", tool).exists()]
    if missing:
        pytest.skip(f"no {', '.join(missing)} in /usr/sbin: apt-get install libvirt-daemon-system (.ci/install does)")
    run = tmp_path_factory.mktemp("libvirtd")
    started = []
    for tool in ("virtlogd", "libvirtd"):
        pid = run / f"{tool}.pid"
        proc = subprocess.run([f"/usr/sbin/{tool}", "--daemon", "--pid-file", str(pid)], capture_output=True,
                              text=True, timeout=60)
        if proc.returncode != 0:
            pytest.skip(f"`{tool} --daemon` exited {proc.returncode}: {' '.join(proc.stderr.split())[:300]}")
        started.append(pid)
    for _ in range(100):   # libvirtd answers once its socket is up (bounded: 10 s)
        if _virsh("version", check=False).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.skip(f"libvirtd started but `virsh -c qemu:///system version` says: "
                    f"{' '.join(_virsh('version', check=False).stderr.split())[:300]}")
    yield
    for pid in reversed(started):
        try:
            os.kill(int(pid.read_text()), 15)
        except (OSError, ValueError):
            pass


@pytest.mark.slow
@pytest.mark.network("debian")
def test_lab_image_guest_defined_twice_and_started_by_libvirt(lab_image, libvirtd):
    """The XML lfspass wrote, as a user types it: define, define again, start, the marker on the
    serial log, destroy, `virsh undefine --keep-nvram` (as the XML's description says): VARS stays."""
    from lfspass.vm.image.root import MARKER
    from lfspass.vm.launcher import SERIAL_LOG

    folder = lab_image["folder"]
    xml, serial, vars_file = folder / f"{VM}.xml", folder / SERIAL_LOG, folder / "OVMF_VARS.fd"
    mode = folder.stat().st_mode & 0o7777
    assert mode == 0o710 and folder.stat().st_gid == __import__("grp").getgrnam("libvirt-qemu").gr_gid, oct(mode)
    assert (vars_file.stat().st_mode & 0o777) == 0o600 and (lab_image["disk"].stat().st_mode & 0o777) == 0o600
    # The fixture's top folder is 0700 (mkdtemp): lfspass named it as the one libvirt-qemu cannot enter.
    top, stderr = lab_image["top"], lab_image["proc"].stderr
    assert f"libvirt's QEMU user libvirt-qemu cannot enter {top} (0700 root:root)" in stderr, stderr[-2000:]
    assert f"setfacl -m u:libvirt-qemu:x {top}" in stderr
    opened = []   # what the test itself opens for libvirt-qemu (above the recipe's root), put back after
    for p in folder.parents:
        if p.stat().st_mode & 0o001 == 0 and p.is_relative_to(top):
            opened.append((p, p.stat().st_mode & 0o7777))
            os.chmod(p, (p.stat().st_mode & 0o7777) | 0o001)
    try:
        _virsh("destroy", VM, check=False)   # a domain an earlier, killed run left behind
        assert "defined from" in _virsh("define", str(xml)).stdout
        assert "defined from" in _virsh("define", str(xml)).stdout   # the same <uuid>: an update, not a clash
        _virsh("start", VM)
        text = ""
        for _ in range(15 * 60):   # the recipe's installer.timeout (15 min) bounds the wait
            text = serial.read_text(errors="replace") if serial.exists() else ""
            if MARKER in text or "running" not in _virsh("domstate", VM).stdout:
                break
            time.sleep(1)
        assert MARKER in text, f"no {MARKER!r} in {serial} ({_virsh('domstate', VM).stdout.strip()}): {text[-2000:]}"
        _virsh("destroy", VM)
        refused = _virsh("undefine", VM, check=False)   # libvirt refuses: the domain has nvram
        assert refused.returncode != 0 and "nvram" in refused.stderr, refused.stderr
        _virsh("undefine", "--keep-nvram", VM)
        assert vars_file.stat().st_size > 0 and vars_file.stat().st_uid == 0   # kept, and given back to root
        assert _virsh("domstate", VM, check=False).returncode != 0
    finally:
        _virsh("destroy", VM, check=False)
        _virsh("undefine", "--keep-nvram", VM, check=False)
        for p, old in opened:
            os.chmod(p, old)
