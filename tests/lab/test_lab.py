"""The virtual lab: initramfs bytes, GRUB line parsing, and real QEMU boots of the installed kernels."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit
from lfspass.errors import CheckFailed, InputError, ToolFailed
from lfspass.lab.grub_entry import grub_entry, lab_cmdline
from lfspass.lab.initramfs import build_initramfs
from lfspass.lab.qemu_run import BEGIN_MARK, END_MARK, extract_host, kernel_argv, run_qemu
from lfspass.recipe import load_recipe

GRUB_CFG = """\
set default=0
menuentry "Debian" {
  linux /boot/vmlinuz-6.1.0-28-amd64 root=UUID=x ro quiet
}
### BEGIN lfspass (generated from lab.toml; edit the recipe, not this block) ###
# lfspass kernel: 6.1.192
menuentry "GNU/Linux, Linux 6.1.192-lfs-12.2" {
  search --no-floppy --set=root --fs-uuid 5e1f0c7a-1ab0-4c1b-9d2e-1ab000000001
  linux   /boot/vmlinuz-6.1.192-lfs-12.2 root=PARTUUID=1ab00000-0000-4000-8000-000000000001 ro intel_iommu=on iommu=pt vfio-pci.ids=1234:11e8 panic=-1
}
# lfspass kernel: 6.1.100
menuentry "GNU/Linux, Linux 6.1.100-lfs-12.2" {
  linux   /boot/vmlinuz-6.1.100-lfs-12.2 root=PARTUUID=1ab00000-0000-4000-8000-000000000001 ro intel_iommu=on
}
### END lfspass ###
"""


def _install_root(tmp: Path) -> Path:
    root = tmp / "root"
    mods = root / "lib/modules/6.1.192"
    (mods / "kernel/drivers/vfio/pci").mkdir(parents=True)
    (mods / "kernel/drivers/vfio/pci/vfio-pci.ko").write_bytes(b"\x7fELF not really")
    (mods / "modules.dep").write_text("kernel/drivers/vfio/pci/vfio-pci.ko:\n")
    (mods / "build").symlink_to("/usr/src/linux-6.1.192")  # leaves the root: must not be packed
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "etc/modprobe.d/vfio.conf").write_text("options vfio-pci ids=1234:11e8\n")
    (root / "etc/sysconfig").mkdir()
    (root / "etc/sysconfig/modules").write_text("# comment\nvfio\nvfio-pci\n")
    (root / "boot").mkdir()
    (root / "boot/config-6.1.192").write_text("CONFIG_VFIO_PCI=m\n")
    return root


def _members(image: Path) -> dict[str, str]:
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=gzip.decompress(image.read_bytes()),
                             capture_output=True, check=True).stdout.decode()
    return {re.search(r" 1970 (\S+)", line).group(1): line for line in listing.splitlines()}


def test_initramfs_is_deterministic_and_holds_the_generated_files(tmp_path):
    root = _install_root(tmp_path)
    a, b = tmp_path / "a.cpio.gz", tmp_path / "b.cpio.gz"
    assert build_initramfs(root, "6.1.192", a)
    (root / "lib/modules/6.1.192/modules.dep").touch()  # a new mtime alone changes nothing
    assert build_initramfs(root, "6.1.192", b)
    assert a.read_bytes() == b.read_bytes()
    assert not build_initramfs(root, "6.1.192", a)  # unchanged bytes: file left alone
    members = _members(a)
    for name in ("init", "bin/busybox", "bin/sh", "sbin/modprobe", "etc/modprobe.d/vfio.conf",
                 "etc/sysconfig/modules", "boot/config-6.1.192", "lib/modules/6.1.192/modules.dep",
                 "lib/modules/6.1.192/kernel/drivers/vfio/pci/vfio-pci.ko", "dev/console"):
        assert name in members, name
    assert "lib/modules/6.1.192/build" not in members
    assert members["dev/console"].startswith("crw-------")
    assert all(" root     root " in line and "1970" in line for line in members.values())
    assert list(members) == sorted(members)
    (root / "etc/modprobe.d/vfio.conf").write_text("options vfio-pci ids=10de:1e37\n")
    assert build_initramfs(root, "6.1.192", a)
    assert a.read_bytes() != b.read_bytes()


def test_initramfs_names_a_missing_kernel(tmp_path):
    with pytest.raises(InputError, match=r"lib/modules/6\.9\.9 not found.*doit kernel"):
        build_initramfs(tmp_path, "6.9.9", tmp_path / "i.gz")
    assert not (tmp_path / "i.gz").exists()


def test_grub_entry_takes_the_newest_lfspass_linux_line(tmp_path):
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(GRUB_CFG)
    entry = grub_entry(cfg)
    assert entry.kernel == "/boot/vmlinuz-6.1.192-lfs-12.2"
    assert lab_cmdline(entry.params) == ["intel_iommu=on", "iommu=pt", "vfio-pci.ids=1234:11e8", "panic=-1",
                                         "console=ttyS0"]
    assert lab_cmdline(["root=/dev/vda1", "rw", "console=ttyS0,115200", "panic=5"]) == ["console=ttyS0,115200", "panic=5"]


def test_grub_without_lfspass_block_says_run_grub(tmp_path):
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(GRUB_CFG.split("### BEGIN")[0])
    with pytest.raises(InputError, match=r"no lfspass block.*doit grub"):
        grub_entry(cfg)


def test_extract_host_reads_what_busybox_sends(tmp_path):
    """The guest's own pipeline (busybox tar | gzip | base64), decoded on the host side."""
    src = tmp_path / "save"
    (src / "sys/kernel/iommu_groups/3/devices").mkdir(parents=True)
    (src / "sys/kernel/iommu_groups/3/devices/0000:00:01.0").symlink_to("../../../../devices/pci0000:00/0000:00:01.0")
    (src / "dmesg.txt").write_text("DMAR: IOMMU enabled\n")
    blob = subprocess.run(f"busybox tar -C {src} -c . | busybox gzip -c | busybox base64", shell=True,
                          capture_output=True, check=True).stdout.decode()
    out = tmp_path / "ttyS1"
    out.write_text(f"noise\r\n{BEGIN_MARK}\r\n{blob.replace(chr(10), chr(13) + chr(10))}{END_MARK}\r\n")
    dest = extract_host(out, tmp_path / "host", tmp_path / "guest.log")
    assert (dest / "dmesg.txt").read_text() == "DMAR: IOMMU enabled\n"
    assert str((dest / "sys/kernel/iommu_groups/3/devices/0000:00:01.0").readlink()).startswith("../../../../devices")
    out.write_text("kernel panic\n")
    with pytest.raises(CheckFailed, match="sent no host state"):  # the guest never said its mark: exit 1
        extract_host(out, tmp_path / "host", tmp_path / "guest.log")
    assert (dest / "dmesg.txt").exists()  # a failed run leaves the last good copy alone


def test_bad_lab_switch_is_one_error_line():
    proc = run_doit("lab", "iommu=maybe", cwd=REPO)
    assert_one_error_line(proc, "iommu='maybe'", "expected on or off", "iommu=off")
    proc = run_doit("list", cwd=REPO, env={"LFSPASS_LAB_IOMMU": "perhaps"})
    assert_one_error_line(proc, "LFSPASS_LAB_IOMMU='perhaps'")


# --- real boots: the kernels `doit` builds and installs (slow) ---------------------------------

LAB = REPO / "build" / "lab"


def _verdict(lab_dir: Path) -> dict:
    return json.loads((lab_dir / "verdict.json").read_text())


def test_verdict_says_which_external_module_the_guest_did_not_load(tmp_path):
    from lfspass.lab.verdict import external_modules

    recipe = load_recipe(REPO / "recipes" / "lab.toml")
    assert external_modules(tmp_path, recipe) == {"lfspass_hello": "NOT loaded: the guest has nothing under updates/lfspass_hello/"}
    rows = tmp_path / "external-modules.txt"
    ko = "updates/lfspass_hello/lfspass_hello.ko"
    rows.write_text(f"lfspass_hello {ko} {ko} FAILED\n")
    assert external_modules(tmp_path, recipe) == {"lfspass_hello": "NOT loaded: modprobe lfspass_hello failed"}
    rows.write_text(f"lfspass_hello {ko} kernel/misc/lfspass_hello.ko loaded\n")
    assert "modules.dep names kernel/misc/lfspass_hello.ko" in external_modules(tmp_path, recipe)["lfspass_hello"]
    rows.write_text(f"lfspass_hello {ko} {ko} loaded\n")
    assert external_modules(tmp_path, recipe) == {"lfspass_hello": f"loaded from {ko}"}


@pytest.mark.slow
def test_lab_module_variant_whole_job_then_only_the_boot(tmp_path):
    first = run_doit(cwd=REPO)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "lab: PASS" in first.stdout
    verdict = _verdict(LAB)
    assert verdict["driver"] == "vfio-pci" and verdict["iommu_enabled"] is True
    assert verdict["id"] == "1234:11e8" and isinstance(verdict["group"], int)
    assert "vfio-pci.ids" not in verdict["cmdline"]  # the module path: modprobe.d, not the command line
    # Booted by real GRUB under OVMF: the entry it chose and the grubenv it left are recorded.
    assert verdict["grub"]["booted"]["id"].startswith("lfspass-6.1.") and "BOOT_IMAGE=/boot/vmlinuz-" in verdict["cmdline"]
    assert verdict["grub"]["grubenv_after"].get("next_entry", "") == ""
    assert "lfspass-lab: /etc/sysconfig/modules loaded: vfio" in (LAB / "guest.log").read_text()
    # The recipe's out-of-tree module, built before the kernel was installed: the guest loads it from updates/.
    assert verdict["external_modules"] == {"lfspass_hello": "loaded from updates/lfspass_hello/lfspass_hello.ko"}
    assert "lfspass_hello: hello from an out-of-tree module built by lfspass" in (LAB / "guest.log").read_text()
    second = run_doit(cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    ran = [line for line in second.stdout.splitlines() if line.startswith(".  ")]
    assert ran == [".  lab:boot"], second.stdout
    cached = run_doit("lab=cached", cwd=REPO)
    assert cached.returncode == 0 and not [l for l in cached.stdout.splitlines() if l.startswith(".  ")], cached.stdout
    # The user's own modprobe.d file goes into the image like lfspass's, and so does its removal.
    mine = LAB / "root/etc/modprobe.d/zz-user.conf"
    mine.write_text("options vfio_iommu_type1 allow_unsafe_interrupts=0\n")
    try:
        added = run_doit(cwd=REPO)
        assert added.returncode == 0 and ".  lab:initramfs" in added.stdout, added.stdout + added.stderr
        assert "etc/modprobe.d/zz-user.conf" in _members(LAB / "initramfs.cpio.gz")
    finally:
        mine.unlink()
    removed = run_doit(cwd=REPO)
    assert removed.returncode == 0 and ".  lab:initramfs" in removed.stdout, removed.stdout + removed.stderr
    assert "etc/modprobe.d/zz-user.conf" not in _members(LAB / "initramfs.cpio.gz")


@pytest.mark.slow
def test_lab_negative_without_iommu_fails_with_doctors_message():
    proc = run_doit("lab", "iommu=off", cwd=REPO)
    line = assert_one_error_line(proc, "lab failed", "iommu:", "IOMMU")
    assert "vfio-pci" in line
    verdict = _verdict(LAB / "no-iommu")
    assert verdict["iommu_enabled"] is False and verdict["driver"] != "vfio-pci"


@pytest.mark.slow
def test_lab_builtin_variant_binds_through_the_command_line():
    # Its own doit database, so switching recipes never makes the other one look changed.
    lab_dir = REPO / "build" / "lab-builtin"
    lab_dir.mkdir(parents=True, exist_ok=True)
    proc = run_doit(f"recipe={REPO / 'recipes' / 'lab-builtin.toml'}", cwd=lab_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "lab: PASS" in proc.stdout
    verdict = _verdict(lab_dir)
    assert verdict["driver"] == "vfio-pci" and verdict["iommu_enabled"] is True
    assert "vfio-pci.ids=1234:11e8" in verdict["cmdline"]


DI_KERNEL = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")


def test_boot_kills_a_guest_that_overstays(tmp_path):
    """A real kernel that never powers off (Debian's installer) is killed with a message naming the log."""
    if not DI_KERNEL.is_file():
        pytest.fail(f"{DI_KERNEL} missing: apt-get install debian-installer-12-netboot-amd64 (see .ci/run)")
    log, out = tmp_path / "guest.log", tmp_path / "ttyS1"
    argv = kernel_argv(DI_KERNEL, DI_KERNEL.with_name("initrd.gz"), ["console=ttyS0"], log, out)
    assert argv[argv.index("-accel") + 1] == "tcg" and "intel-iommu,intremap=on" in argv
    with pytest.raises(CheckFailed, match=rf"still running after 2 s, killed.*{log}") as err:
        run_qemu(argv, log, out, timeout=2)
    assert err.value.exit_code == 1
    assert not subprocess.run(["pgrep", "-f", f"file:{log}"], capture_output=True).stdout  # no guest left behind
    assert "edu" in argv and "intel-iommu,intremap=on" not in kernel_argv(DI_KERNEL, DI_KERNEL, [], log, out, iommu=False)


def test_qemu_that_fails_to_start_is_a_tool_failure(tmp_path):
    """QEMU refusing its command line is exit 3 with QEMU's own words, not a bad recipe (2) or a failed check (1)."""
    log, out = tmp_path / "guest.log", tmp_path / "ttyS1"
    argv = kernel_argv(tmp_path / "no-such-kernel", tmp_path / "no-initrd", [], log, out)
    with pytest.raises(ToolFailed, match=r"QEMU exited with status 1: .*no-such-kernel") as err:
        run_qemu(argv, log, out, timeout=60)
    assert err.value.exit_code == 3


# --- issue 12: the lab boots through real GRUB; the boot-once scenario (slow) -----------------
@pytest.mark.slow
def test_boot_once_scenario_through_grub():
    """`doit bootonce`: the boot script confirms the good kernel (no command typed); the broken one, with
    tries = 2, boots twice, fails both confirms and is marked bad; the good one again; boot try of the
    bad build refused; rollback."""
    proc = run_doit(f"recipe={REPO / 'recipes/lab.toml'}", "bootonce", cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    verdict = json.loads((REPO / "build/lab/bootonce/verdict.json").read_text())
    assert verdict["ok"] is True
    steps = verdict["steps"]
    boots = [s for s in steps if "booted" in s]
    good, bad = boots[0]["booted"], boots[1]["booted"]
    assert [b["booted"]["id"] for b in boots] == [good["id"], bad["id"], bad["id"], good["id"]] and good["id"] != bad["id"]
    assert bad["kernel"].endswith("-lfs-12.2-broken")
    # Real GRUB counted the tries: armed again after the first, cleared after the second.
    assert boots[1]["grubenv_before"]["next_entry"] == bad["id"] and boots[1]["grubenv_before"]["lfspass_retries"] == "1"
    assert boots[1]["grubenv_after"]["next_entry"] == bad["id"] and boots[1]["grubenv_after"]["lfspass_retries"] == "0"
    assert not boots[2]["grubenv_after"].get("next_entry")
    assert boots[3]["grubenv_after"]["saved_entry"] == good["id"] and not boots[3]["grubenv_after"].get("next_entry")
    # What each boot's lfspass-confirm script ran and how it ended; nothing else ran `boot confirm`.
    scripts = [s for s in steps if s["step"].startswith("boot script")]
    assert all(s["ran"][:4] == ["lfspass", "boot", "confirm", "--at-boot"] for s in scripts)
    assert [s["tried_outcome"] for s in scripts] == ["confirmed", "pending", "bad", "bad"]
    assert scripts[0]["grubenv"]["saved_entry"] == good["id"] and "marked bad" in scripts[2]["said"]
    assert not [s for s in steps if s["step"].startswith("confirm")]
    refused = [s for s in steps if s["step"].startswith("boot try") and s["exit"] != 0]
    assert len(refused) == 1 and bad["id"] in refused[0]["refused"] and "marked bad" in refused[0]["refused"]
    rollback = steps[-1]
    assert all(rollback["byte_identical"].values()) and "boot/grub/grub.cfg" in rollback["restored"]
    assert "etc/rc.d/init.d/lfspass-confirm" in rollback["byte_identical"]


def test_grubenv_written_in_place_on_a_real_boot_image(tmp_path):
    """write_image_env finds grubenv's block through the real debugfs and dumpe2fs and overwrites only it."""
    from lfspass.lab.boot_disk import block_size, make_disk, read_image_env, write_image_env

    env = tmp_path / "root/boot/grub/grubenv"
    env.parent.mkdir(parents=True)
    subprocess.run(["grub-editenv", str(env), "create"], check=True)
    img = make_disk(tmp_path / "root", tmp_path / "boot.ext2", "5e1f0c7a-1ab0-4c1b-9d2e-1ab000000001")
    assert read_image_env(img) == env.read_bytes()
    subprocess.run(["grub-editenv", str(env), "set", "next_entry=lfspass-6.1.192"], check=True)
    write_image_env(img, env.read_bytes())
    assert b"next_entry=lfspass-6.1.192\n" in read_image_env(img) and read_image_env(img) == env.read_bytes()
    # dumpe2fs output without a block size line is 0 (refused by write_image_env), not a None match crash.
    assert block_size("Filesystem volume name:   <none>\n") == 0


@pytest.mark.parametrize(("task", "recipe", "says"), [
    ("lab", "recipes/hpe-dl380-t10.toml", "is not a lab recipe ([lab] enabled = false); run the lab with "
                                          "recipe=recipes/lab.toml"),
    ("bootonce", "recipes/hpe-dl380-t10.toml", "is not a lab recipe ([lab] enabled = false)"),
    ("nested", "recipes/lab.toml", "is not a nested lab recipe ([lab] nested = false); run it with "
                                   "recipe=recipes/lab-nested.toml"),
    ("labbind", "recipes/lab.toml", "is not a runtime-bind lab recipe ([lab] bind = false); run it with "
                                    "recipe=recipes/lab-bind.toml"),
])
def test_a_lab_task_on_another_kind_of_recipe_says_which_to_run(tmp_path: Path, task: str, recipe: str,
                                                                says: str) -> None:
    """Nothing is built or booted: one line naming the recipe and the one to run instead."""
    proc = run_doit(f"recipe={REPO / recipe}", task, cwd=tmp_path)
    assert_one_error_line(proc, str(REPO / recipe), says)
