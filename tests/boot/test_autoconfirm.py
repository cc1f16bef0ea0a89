"""Automatic confirm and bounded tries (issue 21): the lfspass-confirm boot script and unit the grub
stage writes, `[boot] tries` in grubenv, a build that used its tries marked bad and refused.

What GRUB does at each boot (lower lfspass_retries and arm next_entry again, or clear it) is
written here with grub-editenv as the real GRUB writes it; the lab's `doit bootonce` boots
real GRUB for the same steps (tests/lab/test_lab.py)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli, run_doit
from hostcases import write_case
from make_fixtures import build
from test_boot_once import editenv, grub_ids, install

SCRIPT = "etc/rc.d/init.d/lfspass-confirm"
LINKS = [f"etc/rc.d/rc{n}.d/S99lfspass-confirm" for n in (3, 4, 5)]
UNIT = "etc/systemd/system/lfspass-confirm.service"
WANTS = "etc/systemd/system/multi-user.target.wants/lfspass-confirm.service"


@pytest.fixture(scope="module")
def saved_hosts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("saved")
    return {name: build(name, base / name) for name in ("dl380", "dl380-iommu-off")}


def grub_boots(root: Path) -> None:
    """What the lfspass block of grub.cfg does to grubenv as GRUB boots next_entry (see ENV_LOGIC)."""
    env = editenv(root)
    retries = env.get("lfspass_retries", "")
    grubenv = str(root / "boot/grub/grubenv")
    if retries.isdigit() and int(retries) > 0:   # armed again, one fewer left
        subprocess.run(["grub-editenv", grubenv, "set", f"lfspass_retries={int(retries) - 1}"], check=True)
    else:                                        # the last try: next_entry cleared for good
        subprocess.run(["grub-editenv", grubenv, "set", "next_entry="], check=True)


def with_keys(recipe: Path, section: str, text: str) -> None:
    recipe.write_text(recipe.read_text().replace(f"[{section}]\n", f"[{section}]\n{text}\n", 1))


def boot_script(root: Path, link: str = LINKS[0]) -> subprocess.CompletedProcess:
    """Run the rc link as the LFS book's rc runs it: `S99lfspass-confirm start`."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    return subprocess.run([str(root / link), "start"], capture_output=True, text=True, env=env)


def test_sysvinit_script_and_links_written_journaled_and_rolled_back(tmp_path):
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    root = tmp_path / "root"
    install(tmp_path, recipe, "6.10.5", b"good kernel")
    script = root / SCRIPT
    assert script.is_file() and script.stat().st_mode & 0o777 == 0o755
    text = script.read_text()
    assert "### BEGIN INIT INFO" in text and "# Default-Start:       3 4 5" in text
    assert f"boot confirm --at-boot --recipe {recipe}" in text
    subprocess.run(["sh", "-n", str(script)], check=True)
    for link in LINKS:
        assert os.readlink(root / link) == "../init.d/lfspass-confirm" and (root / link).resolve() == script.resolve()
    assert not (root / UNIT).exists()
    # The boot script, run as rc runs it: nothing tried, nothing to do, and it says OK.
    proc = boot_script(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing to confirm: no kernel was tried" in proc.stdout and proc.stdout.rstrip().endswith("OK")
    # Journaled with the other host edits: rolling back `doit grub vfio` removes script and links.
    listing = run_cli("rollback", "--recipe", str(recipe), "--list", check=True).stdout
    assert SCRIPT in listing and LINKS[0] in listing
    assert run_cli("rollback", "--recipe", str(recipe)).returncode == 0
    assert not script.exists() and not any((root / link).is_symlink() for link in LINKS)


def test_systemd_unit_and_its_wants_link(tmp_path):
    recipe = write_case(tmp_path, "intel-systemd-builtin")
    root = tmp_path / "root"
    install(tmp_path, recipe, "6.10.5", b"good kernel")
    unit = root / UNIT
    text = unit.read_text()
    assert "Type=oneshot" in text and "After=multi-user.target" in text and "WantedBy=multi-user.target" in text
    assert f"boot confirm --at-boot --recipe {recipe}" in text and "ConditionPathExists=/boot/grub/grubenv" in text
    assert os.readlink(root / WANTS) == "../lfspass-confirm.service" and (root / WANTS).resolve() == unit.resolve()
    assert not (root / SCRIPT).exists()
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_tries_two_then_marked_bad_refused_until_rebuilt(tmp_path, saved_hosts):
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    with_keys(recipe, "boot", "tries = 2")
    root = tmp_path / "root"
    install(tmp_path, recipe, "6.10.5", b"a build that comes up without its IOMMU")
    bad = grub_ids(root)[0]
    assert run_cli("boot", "try", "--recipe", str(recipe)).returncode == 0
    assert editenv(root) == {"next_entry": bad, "lfspass_retries": "1"}
    status = json.loads(run_cli("boot", "status", "--recipe", str(recipe), "--json", check=True).stdout)
    assert status["tries_left"] == 2 and status["tried"]["tries"] == 2 and status["bad"] == []
    assert status["tried_outcome"] == "pending"

    confirm = ["boot", "confirm", "--at-boot", "--recipe", str(recipe), "--host-root", str(saved_hosts["dl380-iommu-off"])]
    grub_boots(root)                             # boot 1: GRUB arms it again
    assert editenv(root) == {"next_entry": bad, "lfspass_retries": "0"}
    proc = run_cli(*confirm)
    assert proc.returncode == 1 and "1 try left" in proc.stderr and "marked bad" not in proc.stderr, proc.stderr
    assert "tried:        " + bad + ", 1 of 2 tries left" in run_cli("boot", "status", "--recipe", str(recipe)).stdout
    grub_boots(root)                             # boot 2, the last: next_entry cleared
    proc = run_cli(*confirm)
    assert proc.returncode == 1 and f"{bad} used its 2 tries and is marked bad" in proc.stderr, proc.stderr
    status = json.loads(run_cli("boot", "status", "--recipe", str(recipe), "--json", check=True).stdout)
    assert [b["id"] for b in status["bad"]] == [bad] and status["bad"][0]["tries"] == 2
    assert "iommu" in status["bad"][0]["why"].lower() and status["tries_left"] == 0
    assert status["tried_outcome"] == "bad"
    assert f"marked bad:   {bad} (used its 2 tries" in run_cli("boot", "status", "--recipe", str(recipe)).stdout
    # The boot script after that: nothing left to confirm.
    proc = run_cli(*confirm)
    assert proc.returncode == 0 and f"nothing to confirm: {bad} is already bad" in proc.stdout, proc.stdout
    before = (root / "boot/grub/grubenv").read_bytes()
    assert_one_error_line(run_cli("boot", "try", "--recipe", str(recipe)), bad, "marked bad", "rebuild")
    assert (root / "boot/grub/grubenv").read_bytes() == before

    # Rebuilt (other bytes, so another entry id): tried again, and this one is confirmed.
    (root / "boot/vmlinuz-6.10.5-lfs-12.2").write_bytes(b"the fixed build")
    assert run_doit(f"recipe={recipe}", "-a", "grub", cwd=tmp_path).returncode == 0   # as kernel:install would
    fixed = grub_ids(root)[0]
    assert fixed != bad
    assert run_cli("boot", "try", "--recipe", str(recipe)).returncode == 0
    grub_boots(root)
    proc = run_cli("boot", "confirm", "--at-boot", "--recipe", str(recipe), "--host-root", str(saved_hosts["dl380"]))
    assert proc.returncode == 0 and f"confirmed: {fixed} is now the default" in proc.stdout, proc.stdout + proc.stderr
    env = editenv(root)   # confirmed: the default, and GRUB owes it no more tries
    assert env["saved_entry"] == fixed and not env.get("next_entry") and "lfspass_retries" not in env


def test_a_kernel_that_never_comes_up_is_marked_bad_by_the_defaults_boot_script(tmp_path, saved_hosts):
    """The tried kernel panics before userspace on both tries; the default boots and its boot script marks it bad."""
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    with_keys(recipe, "host", f'sysfs_root = "{saved_hosts["dl380"]}"')   # the booted host the script checks
    root = tmp_path / "root"
    install(tmp_path, recipe, "6.10.5", b"good kernel")
    good = grub_ids(root)[0]
    assert run_cli("boot", "try", "--recipe", str(recipe)).returncode == 0
    grub_boots(root)
    proc = boot_script(root, LINKS[2])   # runlevel 5 runs it as well
    assert proc.returncode == 0 and f"confirmed: {good} is now the default" in proc.stdout, proc.stdout + proc.stderr

    with_keys(recipe, "boot", "tries = 2")
    install(tmp_path, recipe, "6.10.9", b"a kernel that panics")
    new = grub_ids(root)[0]
    assert run_cli("boot", "try", "--recipe", str(recipe)).returncode == 0
    assert editenv(root) == {"saved_entry": good, "next_entry": new, "lfspass_retries": "1"}
    grub_boots(root)                  # try 1 panics (panic=10 reboots it)
    proc = boot_script(root)          # the console chose the default this once: not counted against it here
    assert proc.returncode == 0 and "GRUB boots that one at the next boot (1 try left)" in proc.stdout, proc.stdout
    grub_boots(root)                  # try 2 panics as well; GRUB is back on saved_entry
    proc = boot_script(root)
    # Like the LFS book's scripts it exits 0 for rc; evaluate_retval shows FAIL on the console.
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("FAIL"), proc.stdout
    assert f"{new} used its 2 tries and is marked bad" in proc.stderr and "6.10.5, not the tried 6.10.9" in proc.stderr
    assert editenv(root)["saved_entry"] == good
    proc = boot_script(root)
    assert proc.returncode == 0 and "nothing to confirm" in proc.stdout
    assert_one_error_line(run_cli("boot", "try", "--recipe", str(recipe)), new, "2 tries", "marked bad")


def test_tries_out_of_range_and_an_old_block_are_one_error_line(tmp_path):
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    text = recipe.read_text()
    for value in ("0", "10", '"2"'):
        recipe.write_text(text.replace("[boot]\n", f"[boot]\ntries = {value}\n", 1))
        assert_one_error_line(run_cli("boot", "status", "--recipe", str(recipe)), "boot.tries")
    recipe.write_text(text)
    install(tmp_path, recipe, "6.10.5", b"k")
    cfg = tmp_path / "root/boot/grub/grub.cfg"
    # A grub.cfg written before [boot] tries: GRUB there would boot the kernel once only.
    lines = cfg.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "lfspass_retries}\" = 1 ]" in line)
    end = lines.index("  fi\n", start)
    cfg.write_text("".join(line for line in lines[:start] + lines[end + 1:] if "lfspass_retries" not in line))
    subprocess.run(["grub-script-check", str(cfg)], check=True)
    with_keys(recipe, "boot", "tries = 3")
    assert_one_error_line(run_cli("boot", "try", "--recipe", str(recipe)), "predates [boot] tries", "doit grub")
    assert run_doit(f"recipe={recipe}", "grub", cwd=tmp_path).returncode == 0
    assert "lfspass_retries" in cfg.read_text()
    assert run_cli("boot", "try", "--recipe", str(recipe)).returncode == 0
    assert editenv(tmp_path / "root")["lfspass_retries"] == "2"


def test_a_state_file_from_before_tries_is_read_as_it_was_meant(tmp_path, saved_hosts):
    """boot.json written by a `boot try` / `confirm` before [boot] tries: its confirmed kernel is not
    marked bad by the boot script of another kernel."""
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    root = tmp_path / "root"
    install(tmp_path, recipe, "6.10.9", b"confirmed before the upgrade")
    old = grub_ids(root)[0]
    state = root / "var/lib/lfspass/boot.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"tried": {"id": old, "release": "6.10.9", "kernel": "/boot/vmlinuz-6.10.9-lfs-12.2",
                                           "title": "t", "at": "2026-01-01 00:00:00 UTC"},
                                 "confirmed": {"id": old, "release": "6.10.9", "at": "2026-01-01 00:00:00 UTC"}}))
    proc = run_cli("boot", "confirm", "--at-boot", "--recipe", str(recipe), "--host-root", str(saved_hosts["dl380"]))
    assert proc.returncode == 0 and f"nothing to confirm: {old} is already confirmed" in proc.stdout, proc.stdout
    # Typed by hand on another kernel: not confirmed, and not marked bad either.
    proc = run_cli("boot", "confirm", "--recipe", str(recipe), "--host-root", str(saved_hosts["dl380"]))
    assert proc.returncode == 1 and "marked bad" not in proc.stderr and "tries left" not in proc.stderr, proc.stderr
    assert json.loads(state.read_text()).get("bad") is None
