"""`doit grub vfio` as a user runs it: outputs, idempotence, user lines kept, bad input."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_cli, run_doit
from hostcases import write_case


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_doit_list_shows_tasks_with_docs(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    proc = run_doit(f"recipe={recipe}", "list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "GRUB menuentry" in lines["grub"]
    assert "vfio-pci" in lines["vfio"]


def test_second_run_executes_nothing_and_keeps_mtimes(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    first = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert ".  grub" in first.stdout and ".  vfio" in first.stdout
    before = _snapshot(tmp_path / "root")
    second = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "-- grub" in second.stdout and "-- vfio" in second.stdout  # doit: up to date
    assert _snapshot(tmp_path / "root") == before


def test_recipe_change_reruns_and_rewrites(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    assert run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path).returncode == 0
    recipe.write_text(recipe.read_text() + '[[devices]]\nid = "10de:1b39"\n')
    proc = run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path)
    assert ".  vfio" in proc.stdout, proc.stdout
    conf = (tmp_path / "root/etc/modprobe.d/vfio.conf").read_text()
    assert "options vfio-pci ids=10de:1e37,10de:1b39\n" in conf


USER_BEFORE = "# my own settings\nset default=2\nset timeout=10\ninsmod part_gpt\n\nmenuentry \"Old LFS\" {\n  linux /boot/vmlinuz-6.6.1-lfs-12.1 root=/dev/sda2 ro\n}\n"
USER_AFTER = "\nmenuentry \"Firmware setup\" {\n  fwsetup\n}\n# trailing comment without newline"


def test_grub_keeps_user_lines_and_old_kernel(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    cfg = tmp_path / "root/boot/grub/grub.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(USER_BEFORE)
    assert run_doit(f"recipe={recipe}", "grub", cwd=tmp_path).returncode == 0
    with cfg.open("a") as fh:  # the user adds lines after lfspass's block
        fh.write(USER_AFTER)
    assert run_doit("--always-execute", f"recipe={recipe}", "grub", cwd=tmp_path).returncode == 0  # -a: run even if up to date
    assert cfg.read_text().endswith(USER_AFTER)
    # A kernel upgrade: the recipe names another release.
    recipe.write_text(recipe.read_text().replace('version = "6.10.5"', 'version = "6.10.9"'))
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = cfg.read_text()
    assert text.startswith(USER_BEFORE)
    assert text.endswith(USER_AFTER)
    new = text.index('menuentry "GNU/Linux, Linux 6.10.9-lfs-12.2"')
    old = text.index('menuentry "GNU/Linux, Linux 6.10.5-lfs-12.2"')
    assert new < old  # the new kernel first, the previous one kept as a fallback
    assert text.count("### BEGIN lfspass") == 1
    subprocess.run(["grub-script-check", str(cfg)], check=True)


def test_t10_and_p10_both_bound_and_listed(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    recipe.write_text(recipe.read_text() + '[[devices]]\naddress = "05:00.0"\nid = "10de:1b39"\n')
    assert run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path).returncode == 0
    conf = (tmp_path / "root/etc/modprobe.d/vfio.conf").read_text()
    assert "options vfio-pci ids=10de:1e37,10de:1b39\n" in conf
    listed = json.loads(run_cli("plugins", "--json", check=True).stdout)
    by_name = {p["name"]: p["ids"] for p in listed["plugins"]}
    assert by_name["tesla_t10"] == ["10de:1e37"] and by_name["tesla_p10"] == ["10de:1b39"]
    human = run_cli("plugins", check=True).stdout
    assert "tesla_t10  10de:1e37" in human and "tesla_p10  10de:1b39" in human


def _lab_variant(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped lab recipe with one line changed, written beside a fresh root."""
    text = (REPO / "recipes/lab.toml").read_text()
    assert old in text
    text = text.replace(old, new).replace('root = "../build/lab/root"', 'root = "root"')
    text = text.replace('build_dir = "../build/lab/kernel"', 'build_dir = "kernel"')
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_seed_typo_id_in_lab_recipe_is_refused(tmp_path: Path) -> None:
    recipe = _lab_variant(tmp_path, 'id = "1234:11e8"', 'id = "10de:11b39"')
    proc = run_doit(f"recipe={recipe}", cwd=tmp_path)
    line = assert_one_error_line(proc, "10de:11b39", "lab.toml", "devices[0].id")
    assert "4+4 hex digits" in line
    assert not (tmp_path / "root").exists()


BAD_RECIPES = {
    "upper-dash-id": ('[[devices]]\nid = "10DE-1e37"\n', ["10DE-1e37", "devices[0].id", "':'"]),
    "empty-id": ('[[devices]]\nid = ""\naddress = ""\n', ["devices[0]", "address", "id"]),
    "unknown-key": ('[boot]\nroot_partuid = "x"\n', ["boot.root_partuid", "did you mean 'root_partuuid'"]),
    "wrong-type": ('[kernel]\njobs = "four"\n', ["kernel.jobs", "'four'", "integer"]),
    "bad-choice": ('[host]\ninit = "openrc"\n', ["host.init", "openrc", "sysvinit, systemd"]),
    "amd-iommu-on": ('[host]\ncpu_vendor = "amd"\n[boot]\ncmdline = ["amd_iommu=on"]\n', ["amd_iommu=on", "remove it"]),
    "no-toml": ("[host\n", ["not valid TOML"]),
}


@pytest.mark.parametrize("name", sorted(BAD_RECIPES))
def test_bad_recipe_one_error_line_nothing_written(tmp_path: Path, name: str) -> None:
    body, needles = BAD_RECIPES[name]
    recipe = tmp_path / "bad.toml"
    base = '[kernel]\nversion = "6.10.5"\n' if "[kernel]" not in body else ""
    base += '[boot]\nroot_partuuid = "x"\n' if "[boot]" not in body else ""
    recipe.write_text(body.replace("[kernel]\n", '[kernel]\nversion = "6.10.5"\n')
                      .replace("[boot]\n", '[boot]\nroot_partuuid = "x"\n') + base + '[host]\nroot = "root"\n'
                      if "[host]" not in body else body.replace("[host]\n", '[host]\nroot = "root"\n') + base)
    proc = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path)
    assert_one_error_line(proc, "bad.toml", *needles)
    assert not (tmp_path / "root").exists()


def test_address_not_in_sysfs(tmp_path: Path) -> None:
    (tmp_path / "host/sys/bus/pci/devices").mkdir(parents=True)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[host]\nroot = "root"\nsysfs_root = "host"\n[kernel]\nversion = "6.1.1"\n'
                      '[boot]\nroot_partuuid = "x"\n[[devices]]\naddress = "82:00.0"\n')
    proc = run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path)
    assert_one_error_line(proc, "0000:82:00.0", "not present", "lspci -D")
    assert not (tmp_path / "root").exists()


def test_address_resolved_through_recorded_sysfs(tmp_path: Path) -> None:
    dev = tmp_path / "host/sys/bus/pci/devices/0000:82:00.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x10de\n")
    (dev / "device").write_text("0x1e37\n")
    (dev / "class").write_text("0x030200\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[host]\nroot = "root"\nsysfs_root = "host"\n[kernel]\nversion = "6.1.1"\n'
                      '[boot]\nroot_partuuid = "x"\n[[devices]]\naddress = "82:00.0"\n')
    assert run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path).returncode == 0
    assert "options vfio-pci ids=10de:1e37\n" in (tmp_path / "root/etc/modprobe.d/vfio.conf").read_text()


def test_missing_template_variable(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    (tmp_path / "entry.j2").write_text('menuentry "{{ titel }}" {\n  linux /boot/{{ vmlinuz }}\n}\n')
    recipe.write_text(recipe.read_text().replace("[boot]\n", '[boot]\nentry_template = "entry.j2"\n'))
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert_one_error_line(proc, "entry.j2", "'titel' is undefined", "available:")
    assert not (tmp_path / "root/boot/grub/grub.cfg").exists()


def test_unwritable_root(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    (tmp_path / "root").write_text("a file where the install root folder should be\n")
    proc = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path)
    assert_one_error_line(proc, "cannot write", "root")
    assert (tmp_path / "root").read_text().startswith("a file")


@pytest.mark.parametrize("what", ["folder", "binary"])
def test_grub_cfg_that_is_not_a_text_file(tmp_path: Path, what: str) -> None:
    """A folder (or binary bytes) where grub.cfg should be: one error line, the thing left as it was."""
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    cfg = tmp_path / "root/boot/grub/grub.cfg"
    if what == "folder":
        (cfg / "keep").mkdir(parents=True)
    else:
        cfg.parent.mkdir(parents=True)
        cfg.write_bytes(b"\xff\xfe menuentry\n")
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert_one_error_line(proc, str(cfg), "is a folder" if what == "folder" else "not text", "re-run")
    assert (cfg / "keep").is_dir() if what == "folder" else cfg.read_bytes() == b"\xff\xfe menuentry\n"


def test_grub_script_check_refuses_broken_entry(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    (tmp_path / "entry.j2").write_text('menuentry "{{ title }}" {\n  linux /boot/{{ vmlinuz }}\n')  # no closing brace
    recipe.write_text(recipe.read_text().replace("[boot]\n", '[boot]\nentry_template = "entry.j2"\n'))
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert_one_error_line(proc, "grub-script-check", "nothing was written")
    assert not (tmp_path / "root/boot/grub/grub.cfg").exists()


def test_acs_override_warns(tmp_path: Path) -> None:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    recipe.write_text(recipe.read_text().replace("[boot]\n", '[boot]\nacs_override = "downstream,multifunction"\n'))
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert proc.returncode == 0
    assert "warning: pcie_acs_override needs the out-of-tree ACS override patch" in proc.stderr
    assert "pcie_acs_override=downstream,multifunction" in (tmp_path / "root/boot/grub/grub.cfg").read_text()


@pytest.mark.slow
def test_lab_recipe_grub_vfio_then_nothing(repo: Path) -> None:
    """Issue 2's acceptance on the shipped lab recipe (builds the lab kernel if needed)."""
    first = run_doit("recipe=recipes/lab.toml", "grub", "vfio", cwd=repo)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    root = repo / "build/lab/root"
    assert "options vfio-pci ids=1234:11e8\n" in (root / "etc/modprobe.d/vfio.conf").read_text()
    assert "vfio-pci" in (root / "etc/sysconfig/modules").read_text().splitlines()
    grub = (root / "boot/grub/grub.cfg").read_text()
    assert "linux   /boot/vmlinuz-6.1." in grub and "-lfs-12.2 root=PARTUUID=" in grub
    subprocess.run(["grub-script-check", str(root / "boot/grub/grub.cfg")], check=True)
    files = [root / "boot/grub/grub.cfg", root / "etc/modprobe.d/vfio.conf", root / "etc/sysconfig/modules"]
    before = {p: p.stat().st_mtime_ns for p in files}
    second = run_doit("recipe=recipes/lab.toml", "grub", "vfio", cwd=repo)
    assert second.returncode == 0, second.stderr
    executed = [line for line in second.stdout.splitlines() if line.startswith(".  ")]
    assert executed == [], second.stdout  # doit marks every task up to date ("-- name")
    assert {p: p.stat().st_mtime_ns for p in files} == before
