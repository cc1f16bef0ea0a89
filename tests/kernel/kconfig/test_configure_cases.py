"""The kernel's own Kconfig cases (sid's scripts/kconfig/tests) through lfspass, in the tree and copied out.

In the tree, the enclosing sid tree's conf reads a case folder; copied out, the conf built
from ``--conf-source <sid tree>`` does.  Each result is compared as the case's __init__.py
compares it: ``config_matches`` byte for byte, ``config_contains`` as a substring.  The
interactive parts (oldconfig, oldaskconfig, savedefconfig: modes lfspass does not offer) run
the conf lfspass builds the way the kernel's conftest.py runs it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli
from kernel_trees import NEEDS_SID
from lfspass.kernel.kconfig import conf_runner

# (case, --base or None for "olddefconfig of the given config", given config, expected, how compared)
CASES = [
    ("transitional", None, "initial_config", "expected_config", "contains"),
    ("conditional_dep", None, "test_config1", "expected_config1", "matches"),
    ("conditional_dep", None, "test_config2", "expected_config2", "matches"),
    ("conditional_dep", None, "test_config3", "expected_config3", "matches"),
    ("warn_changed_input", None, "config", "expected_config", "matches"),
    ("choice", "allyesconfig", None, "allyes_expected_config", "contains"),
    ("choice", "allmodconfig", None, "allmod_expected_config", "contains"),
    ("choice", "allnoconfig", None, "allno_expected_config", "contains"),
    ("choice", "alldefconfig", None, "alldef_expected_config", "contains"),
]


# Every test here reads sid's tree (the fixture is conftest.sid).
pytestmark = NEEDS_SID


def _case(sid, tmp_path: Path, case: str, where: str) -> tuple[Path, list[str]]:
    """(case folder, extra CLI arguments) for the case read in the sid tree or from a copy."""
    folder = sid[0] / "scripts" / "kconfig" / "tests" / case
    if where == "inside":
        return folder, []
    shutil.copytree(folder, tmp_path / case)
    return tmp_path / case, ["--conf-source", str(sid[0])]


@pytest.mark.parametrize("where", ["inside", "copied"])
@pytest.mark.parametrize("case, base, given, expected, how", CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_kernel_case(sid, tmp_path: Path, where: str, case: str, base, given, expected: str, how: str) -> None:
    folder, extra = _case(sid, tmp_path, case, where)
    cfg = tmp_path / "config"
    if given:
        shutil.copyfile(folder / given, cfg)
    args = ["kconfig", "--tree", str(folder), "--config", str(cfg), *extra, *(["--base", base] if base else [])]
    proc = run_cli(*args)
    assert proc.returncode == 0, f"sid linux-source {sid[2]}, {case} {where}: {proc.stderr}"
    want, got = (folder / expected).read_text(), cfg.read_text()
    if how == "matches":
        assert got == want, f"sid linux-source {sid[2]}, {case}/{expected} {where}"
    else:
        assert want in got, f"sid linux-source {sid[2]}, {case}/{expected} {where}"


def test_acceptance_warn_changed_input_copied_out(sid, tmp_path: Path) -> None:
    """`lfspass kconfig --tree <copy> --config <copy of config>` writes exactly expected_config."""
    folder, _extra = _case(sid, tmp_path, "warn_changed_input", "copied")
    cfg = tmp_path / "config"
    shutil.copyfile(folder / "config", cfg)
    proc = run_cli("kconfig", "--tree", str(folder), "--config", str(cfg),
                   env={"LFSPASS_CONF_SOURCE": str(sid[0])})
    assert proc.returncode == 0, proc.stderr
    assert cfg.read_bytes() == (folder / "expected_config").read_bytes()
    assert "NUM: 30 -> 20" in proc.stdout  # conf clamps to the nearest bound of `range 10 20`


def _harness(kc: conf_runner.KernelConf, mode: str, dot_config: Path | None, env: dict[str, str] | None = None,
             keys: str | None = None, out_file: str = ".config") -> tuple[int, str, str, str]:
    """conftest.py's Conf._run_conf with the conf lfspass built: (exit, stdout, stderr, output file)."""
    conf = conf_runner.build_conf(kc)
    with tempfile.TemporaryDirectory() as tmp:
        if dot_config:
            shutil.copyfile(dot_config, Path(tmp) / ".config")
        full = dict(os.environ, srctree=str(kc.tree), KCONFIG_DEFCONFIG_LIST="", **(env or {}))
        # The keys, then Enter for every further question, as conftest's interactive loop sends.
        proc = subprocess.run([str(conf), mode, "Kconfig"], cwd=tmp, env=full, capture_output=True, text=True,
                              input=None if keys is None else keys + "\n" * 64)
        out = Path(tmp, out_file).read_text() if proc.returncode == 0 else ""
    return proc.returncode, proc.stdout, proc.stderr, out


@pytest.mark.parametrize("where", ["inside", "copied"])
def test_kernel_case_interactive_parts(sid, tmp_path: Path, where: str) -> None:
    def conf_for(case: str) -> tuple[conf_runner.KernelConf, Path]:
        folder, extra = _case(sid, tmp_path, case, where)
        kc = conf_runner.locate(folder, "x86_64", conf_source=extra[1] if extra else None)
        assert kc.kernel == sid[0].resolve() and kc.tree == folder.resolve()  # sid's conf reads the folder
        return kc, folder

    kc, t = conf_for("transitional")
    rc, stdout, _err, _out = _harness(kc, "--oldconfig", t / "initial_config", keys="n\n")
    assert rc == 0 and (t / "expected_stdout").read_text() in stdout
    kc, c = conf_for("choice")
    rc, stdout, _err, _out = _harness(kc, "--oldaskconfig", None, keys="")  # oldask0
    assert rc == 0 and (c / "oldask0_expected_stdout").read_text() in stdout
    kc, w = conf_for("warn_changed_input")
    warn = {"KCONFIG_WARN_CHANGED_INPUT": "1"}
    rc, _out, stderr, config = _harness(kc, "--olddefconfig", w / "config", warn)
    assert rc == 0 and (w / "expected_stderr").read_text() in stderr and config == (w / "expected_config").read_text()
    rc, _out, stderr, defconfig = _harness(kc, "--savedefconfig=defconfig", w / "config", warn, out_file="defconfig")
    assert rc == 0 and (w / "expected_stderr").read_text() in stderr
    assert defconfig == (w / "expected_defconfig").read_text()


def test_older_conf_cannot_read_newer_syntax(sid, linux_tree: Path, tmp_path: Path) -> None:
    """transitional (6.18) through 6.1's conf: one error line with conf's words and the way forward."""
    folder, _extra = _case(sid, tmp_path, "transitional", "copied")
    cfg = tmp_path / "config"
    shutil.copyfile(folder / "initial_config", cfg)
    before = cfg.read_bytes()
    proc = run_cli("kconfig", "--tree", str(folder), "--config", str(cfg), "--conf-source", str(linux_tree))
    assert_one_error_line(proc, "Linux 6.1", 'unknown statement "transitional"', "--conf-source a newer")
    assert cfg.read_bytes() == before


@pytest.mark.parametrize("where", ["tree", "inside", "copied"])
def test_leading_zero_refused_in_the_kernels_words(sid, tmp_path: Path, where: str) -> None:
    """NR_CPUS=0128 on the sid tree itself; NUM=0128 on a case folder in it and copied out."""
    cfg = tmp_path / "config"
    if where == "tree":
        tree, extra, sym = sid[0], [], "NR_CPUS"
        shutil.copyfile(sid[0] / "arch/x86/configs/x86_64_defconfig", cfg)
    else:
        (tree, extra), sym = _case(sid, tmp_path, "warn_changed_input", where), "NUM"
        shutil.copyfile(tree / "config", cfg)
    before = cfg.read_bytes()
    proc = run_cli("kconfig", "--tree", str(tree), "--config", str(cfg), *extra, "--set", f"{sym}=0128")
    assert_one_error_line(proc, f"{sym}=0128 (from --set) refused",
                          f"the kernel's conf says \"symbol value '0128' invalid for {sym}\"", "write 128")
    assert cfg.read_bytes() == before
