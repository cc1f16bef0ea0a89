"""kernel:repro and the BTF flags: two builds of a distro-like small config (BTF by pahole,
signed modules, IKHEADERS) give the same bytes; a difference is named."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_doit
from lfspass.errors import BuildError
from lfspass.kernel import btf
from lfspass.kernel.repro import compare, jobs_pair, outputs

RECIPE = REPO / "recipes" / "lab-repro.toml"
BUILD = REPO / "build" / "lab-repro" / "kernel"
NEEDS_PAHOLE = pytest.mark.skipif(shutil.which("pahole") is None, reason="needs pahole (apt-get install dwarves)")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- fast: the BTF flags
@NEEDS_PAHOLE
def test_6_1_gets_its_own_pahole_flags_without_parallel_encoding(linux_tree: Path, tmp_path: Path) -> None:
    with_btf = _config(tmp_path, "CONFIG_DEBUG_INFO_BTF=y\n")
    got = btf.make_vars(linux_tree, with_btf)
    # Debian 12's pahole 1.24: the tree's script says "--btf_gen_floats -j --lang_exclude=rust".
    assert got == ["PAHOLE_FLAGS=--btf_gen_floats --lang_exclude=rust"]
    assert btf.make_vars(linux_tree, _config(tmp_path, "# CONFIG_DEBUG_INFO_BTF is not set\n")) == []


@NEEDS_PAHOLE
def test_a_tree_that_decides_its_flags_itself_is_left_alone(tmp_path: Path) -> None:
    # Trees since 6.8 (scripts/Makefile.btf) drop -j themselves when KBUILD_BUILD_TIMESTAMP is set.
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    (tree / "scripts" / "Makefile.btf").write_text("export PAHOLE_FLAGS := $(pahole-flags-y)\n")
    assert btf.make_vars(tree, _config(tmp_path, "CONFIG_DEBUG_INFO_BTF=y\n")) == []


def test_a_failing_flags_script_is_one_error(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    (tree / "scripts" / "pahole-flags.sh").write_text("echo broken >&2; exit 3\n")
    if shutil.which("pahole") is None:
        pytest.skip("needs pahole")
    with pytest.raises(BuildError, match=r"pahole-flags.sh failed \(exit 3\): broken"):
        btf.make_vars(tree, _config(tmp_path, "CONFIG_DEBUG_INFO_BTF=y\n"))


# ---------------------------------------------------------------- fast: the comparison
def test_compare_names_what_differs_and_what_one_build_lacks(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for side, kheaders in ((a, b"x" * 100), (b, b"x" * 99 + b"y")):
        (side / "arch/x86/boot").mkdir(parents=True)
        (side / "arch/x86/boot/bzImage").write_bytes(b"same image")
        (side / "vmlinux").write_bytes(b"same elf")
        (side / "System.map").write_text("ffffffff81000000 T _text\n")
        (side / "kernel").mkdir()
        (side / "kernel/kheaders.ko").write_bytes(kheaders)
        (side / "modules.order").write_text("kernel/kheaders.ko\n")
    (b / "modules.order").write_text("kernel/kheaders.ko\nvirt/extra.ko\n")
    same, differ = compare(a, b)
    assert sorted(same) == ["System.map", "arch/x86/boot/bzImage", "vmlinux"]
    assert differ == ["kernel/kheaders.ko", "virt/extra.ko (only in build b)"]
    assert outputs(a) == {"arch/x86/boot/bzImage", "vmlinux", "System.map", "kernel/kheaders.ko"}
    assert jobs_pair(2) == (2, 4) and jobs_pair(0)[1] == 2 * jobs_pair(0)[0]


def test_repro_is_not_part_of_doit_kernel(tmp_path: Path) -> None:
    proc = run_doit(f"recipe={RECIPE}", "list", "--all", cwd=REPO)
    assert "kernel:repro" in proc.stdout
    info = run_doit(f"recipe={RECIPE}", "info", "kernel", cwd=REPO)
    assert "kernel:repro" not in info.stdout and "kernel:build" in info.stdout


# ---------------------------------------------------------------- slow: two real builds
@pytest.fixture(scope="module")
def repro_run():
    proc = run_doit(f"recipe={RECIPE}", "kernel:repro", cwd=REPO)
    return proc


@pytest.mark.slow
@NEEDS_PAHOLE
def test_two_builds_of_a_btf_signing_ikheaders_config_are_identical(repro_run) -> None:
    proc = repro_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config = (BUILD / "obj" / ".config").read_text()
    for line in ("CONFIG_DEBUG_INFO_BTF=y", "CONFIG_DEBUG_INFO_BTF_MODULES=y", "CONFIG_MODULE_SIG_ALL=y",
                 "CONFIG_IKHEADERS=m"):
        assert line in config, line
    assert "recipes/.lfspass/module-signing-key.pem" in config   # the persistent key, not kbuild's random one
    report = json.loads((BUILD / "repro" / "report.json").read_text())
    assert report["different"] == [] and report["jobs"][0] != report["jobs"][1]
    same = report["identical"]
    assert {"arch/x86/boot/bzImage", "vmlinux", "System.map", "kernel/kheaders.ko"} <= same.keys()
    assert any(name.startswith("drivers/vfio/") for name in same)    # the core plugin's VFIO modules too
    installed = [n for n in same if n.startswith("root/lib/modules/") and n.endswith("/kernel/kheaders.ko")]
    assert installed and installed[0] in report["signed"]   # signed as installed, and alike in both builds
    # The recipe's out-of-tree module: alike as built and as installed, signed with the kernel's key.
    hello = installed[0].split("/kernel/", 1)[0] + "/updates/lfspass_hello/lfspass_hello.ko"
    assert {"external/lfspass_hello/lfspass_hello.ko", hello} <= same.keys() and hello in report["signed"]
    assert report["pahole_flags"] == ["PAHOLE_FLAGS=--btf_gen_floats --lang_exclude=rust"]
    assert not (BUILD / "repro" / "a").exists()   # both builds removed once they agree


@pytest.mark.slow
def test_repro_again_with_nothing_changed_does_nothing(repro_run) -> None:
    assert repro_run.returncode == 0
    again = run_doit(f"recipe={RECIPE}", "kernel:repro", cwd=REPO)
    assert again.returncode == 0 and "-- kernel:repro" in again.stdout, again.stdout
