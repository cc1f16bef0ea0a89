"""`lfspass boot try|confirm|status` and `lfspass rollback` on a recipe root, with real grub-editenv,
grub-script-check and doctor's checks against saved hosts (the seed's DL380 fixture)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli, run_doit
from hostcases import write_case
from make_fixtures import build

from lfspass.boot.env import env_unwritable


def editenv(root: Path) -> dict[str, str]:
    out = subprocess.run(["grub-editenv", str(root / "boot/grub/grubenv"), "list"], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def grub_ids(root: Path) -> list[str]:
    text = (root / "boot/grub/grub.cfg").read_text()
    return [line.split("--id ", 1)[1].split()[0] for line in text.splitlines() if line.startswith("menuentry")]


def install(tmp: Path, recipe: Path, version: str, content: bytes) -> None:
    """A kernel 'installed' by hand (no build): vmlinuz + config, then `doit grub vfio`."""
    recipe.write_text(recipe.read_text().replace('version = "6.10.5"', f'version = "{version}"'))
    boot = tmp / "root/boot"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / f"vmlinuz-{version}-lfs-12.2").write_bytes(content)
    proc = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    subprocess.run(["grub-script-check", str(boot / "grub/grub.cfg")], check=True)


@pytest.fixture(scope="module")
def saved_hosts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("saved")
    return {name: build(name, base / name) for name in ("dl380", "dl380-iommu-off")}


def test_try_confirm_then_a_failing_kernel_keeps_the_default(tmp_path, saved_hosts):
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    root = tmp_path / "root"
    install(tmp_path, recipe, "6.10.5", b"good kernel")
    assert editenv(root) == {}  # `doit grub` made an empty env block for GRUB to save into
    good = grub_ids(root)[0]
    assert good.startswith("lfspass-6.10.5-lfs-12.2-")
    proc = run_cli("boot", "try", "--recipe", str(recipe))
    assert proc.returncode == 0 and "only lfspass entry" in proc.stderr, proc.stderr
    assert editenv(root) == {"next_entry": good}
    # The seed's DL380, saved after that boot: IOMMU on, T10 on vfio-pci, kernel 6.10.5.
    proc = run_cli("boot", "confirm", "--recipe", str(recipe), "--host-root", str(saved_hosts["dl380"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"confirmed: {good} is now the default" in proc.stdout
    env = editenv(root)
    assert env["saved_entry"] == good

    install(tmp_path, recipe, "6.10.9", b"new kernel")
    new = grub_ids(root)[0]
    assert grub_ids(root) == [new, good]
    proc = run_cli("boot", "try", "--recipe", str(recipe))
    assert proc.returncode == 0, proc.stderr
    assert "power-cycle" in proc.stdout
    env = editenv(root)  # the acceptance check: next boot once, default unchanged
    assert env["next_entry"] == new and env["saved_entry"] == good
    # It came up without the IOMMU (the host saved after that boot): not confirmed, default stays.
    proc = run_cli("boot", "confirm", "--recipe", str(recipe), "--host-root", str(saved_hosts["dl380-iommu-off"]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not confirmed, the default entry is unchanged" in proc.stderr and "iommu" in proc.stdout.lower()
    assert editenv(root)["saved_entry"] == good
    status = json.loads(run_cli("boot", "status", "--recipe", str(recipe), "--json", check=True).stdout)
    assert status["default"]["id"] == good and status["last_confirm"]["ok"] is False
    assert status["tried"]["id"] == new
    text = run_cli("boot", "status", "--recipe", str(recipe), check=True).stdout
    assert f"default:      {good}" in text and "last confirm: FAILED" in text


def test_boot_try_refuses_where_grub_cannot_save_its_env(tmp_path):
    mi = ("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
          "40 22 0:40 / {p} rw - {fs} {src} rw\n")
    boot = tmp_path / "root/boot"
    boot.mkdir(parents=True)
    (tmp_path / "sys/block/dm-3/dm").mkdir(parents=True)
    assert env_unwritable(boot / "grub/grubenv", mi.format(p=boot, fs="ext4", src="/dev/sda2")) is None
    assert "btrfs" in env_unwritable(boot / "grub/grubenv", mi.format(p=boot, fs="btrfs", src="/dev/sda2"))
    assert "RAID" in env_unwritable(boot, mi.format(p=boot, fs="ext4", src="/dev/md0"))
    (tmp_path / "sys/block/dm-3/dm/uuid").write_text("LVM-abc\n")
    assert "LVM" in env_unwritable(boot, mi.format(p=boot, fs="ext4", src="/dev/dm-3"), tmp_path)
    (tmp_path / "sys/block/dm-3/dm/uuid").write_text("CRYPT-LUKS2-abc\n")
    assert "LUKS" in env_unwritable(boot, mi.format(p=boot, fs="xfs", src="/dev/dm-3"), tmp_path)
    # Through the command: the refusal explains itself and changes nothing.
    from lfspass.boot.once import boot_try
    from lfspass.errors import LfspassError
    from lfspass.recipe import load_recipe

    recipe = write_case(tmp_path, "intel-sysvinit-module")
    install(tmp_path, recipe, "6.10.5", b"k")
    before = (boot / "grub/grubenv").read_bytes()
    with pytest.raises(LfspassError, match="next_entry would never be cleared"):
        boot_try(load_recipe(recipe), "6.10.5", mountinfo=mi.format(p=boot, fs="btrfs", src="/dev/sda2"))
    assert (boot / "grub/grubenv").read_bytes() == before


def test_boot_commands_without_a_block_are_one_error_line(tmp_path):
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    assert_one_error_line(run_cli("boot", "try", "--recipe", str(recipe)), "doit grub")
    assert_one_error_line(run_cli("boot", "confirm", "--recipe", str(recipe)), "boot try")


def snapshot(root: Path, rels: list[str]) -> dict[str, bytes | None]:
    return {r: (root / r).read_bytes() if (root / r).exists() else None for r in rels}


def test_rollback_restores_byte_identical_and_leaves_a_user_edit_alone(tmp_path):
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    root = tmp_path / "root"
    files = ["boot/grub/grub.cfg", "boot/grub/grubenv", "etc/modprobe.d/vfio.conf", "etc/sysconfig/modules"]
    install(tmp_path, recipe, "6.10.5", b"good")
    assert run_cli("boot", "try", "--recipe", str(recipe)).returncode == 0
    before = snapshot(root, files)
    # A second kernel with another device list: grub.cfg, grubenv and both vfio files change.
    recipe.write_text(recipe.read_text() + '[[devices]]\nid = "10de:1b39"\n')
    install(tmp_path, recipe, "6.10.9", b"second")
    assert run_cli("boot", "try", "--recipe", str(recipe)).returncode == 0
    after = snapshot(root, files)
    assert all(before[f] != after[f] for f in files[:3])
    listing = run_cli("rollback", "--recipe", str(recipe), "--list", check=True).stdout
    runs = json.loads(run_cli("rollback", "--recipe", str(recipe), "--list", "--json", check=True).stdout)
    assert len(runs) == 4 and "changed  boot/grub/grub.cfg" in listing
    second = runs[2]["id"]  # the doit run that brought the second kernel

    # The user edits a file lfspass wrote: refused, named, nothing restored.
    cfg = root / "boot/grub/grub.cfg"
    cfg.write_text(cfg.read_text() + "# my edit\n")
    proc = run_cli("rollback", "--recipe", str(recipe), second)
    assert_one_error_line(proc, "boot/grub/grub.cfg", "--force", "nothing was restored")
    assert cfg.read_text().endswith("# my edit\n")
    assert snapshot(root, files[1:]) == {f: after[f] for f in files[1:]}
    # --force: every file back as it was before that run, byte for byte.
    proc = run_cli("rollback", "--recipe", str(recipe), second, "--force")
    assert proc.returncode == 0, proc.stderr
    assert "restored boot/grub/grub.cfg" in proc.stdout
    assert snapshot(root, files) == before
    # The rollback is a run too: rolling it back brings the second kernel's files again.
    proc = run_cli("rollback", "--recipe", str(recipe))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(root, files[1:]) == {f: after[f] for f in files[1:]}


def test_vm_launchers_are_journaled_and_rolled_back(tmp_path):
    from lfspass.journal.rollback import list_runs, rollback
    from lfspass.recipe import load_recipe
    from lfspass.vm.launcher import write_launchers
    from lfspass.vm.plan import build_vm_plan

    from conftest import REPO

    recipe = load_recipe(REPO / "recipes/lab.toml")
    recipe.host.root = str(tmp_path / "root")
    written = write_launchers(build_vm_plan(recipe, recipe.vms[0], accel="tcg"))
    assert written and all(p.is_file() for p in written)
    entries = list_runs(recipe.root)[-1]["entries"]
    assert sorted(e["path"] for e in entries) == sorted(str(p.relative_to(recipe.root)) for p in written)
    assert all(e["before"] is None and len(e["after"]) == 64 for e in entries)  # new files, sha256 after
    _, restored = rollback(recipe.root)
    assert not any(p.exists() for p in written) and len(restored) == len(written)


def test_grub_editenv_failing_is_a_tool_failure(tmp_path, monkeypatch):
    """grub-editenv exiting non-zero is an external tool failing (exit 3), not bad input."""
    from lfspass.boot import env
    from lfspass.errors import ToolFailed

    monkeypatch.setattr(env, "require_tool", lambda tool, package: "false")
    with pytest.raises(ToolFailed, match=r"grub-editenv .* failed") as err:
        env._editenv(tmp_path / "grubenv", "create")
    assert err.value.exit_code == 3


def test_one_grubenv_parser_for_files_and_image_bytes(tmp_path):
    from lfspass.boot.env import parse_env, read_env

    block = b"# GRUB Environment Block\nnext_entry=a=b\nsaved_entry=x\n" + b"#" * 969
    (tmp_path / "grubenv").write_bytes(block)
    assert parse_env(block) == read_env(tmp_path / "grubenv") == {"next_entry": "a=b", "saved_entry": "x"}
    assert read_env(tmp_path / "absent") == {}
