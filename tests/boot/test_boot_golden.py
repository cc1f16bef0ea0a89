"""Golden files for what `doit grub vfio` writes, per vendor, init system and VFIO mode.

The test only compares with the committed files; `python tests/regen_golden.py` rewrites them.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import run_doit
from hostcases import CASES, write_case

GOLDEN = Path(__file__).resolve().parent / "golden"
OUTPUTS = {
    "grub.cfg": "boot/grub/grub.cfg",
    "vfio.conf": "etc/modprobe.d/vfio.conf",
    "sysconfig-modules": "etc/sysconfig/modules",
    "modules-load.conf": "etc/modules-load.d/lfspass.conf",
}


def produce(tmp_path: Path, case: str) -> dict[str, Path]:
    """Run `doit grub vfio` on the case's recipe; golden name -> the file it wrote."""
    recipe = write_case(tmp_path, case)
    proc = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = tmp_path / "root"
    return {name: root / rel for name, rel in OUTPUTS.items() if (root / rel).exists()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_host_files(tmp_path: Path, case: str) -> None:
    produced = produce(tmp_path, case)
    # Exactly one autoload file, the one this init system reads.
    assert ("sysconfig-modules" in produced) != ("modules-load.conf" in produced)
    assert (GOLDEN / case).is_dir(), f"{GOLDEN / case} missing: python tests/regen_golden.py, then review it"
    assert sorted(p.name for p in (GOLDEN / case).iterdir()) == sorted(produced), \
        f"{GOLDEN / case}: other files than doit wrote; review, then python tests/regen_golden.py"
    for name, path in produced.items():
        golden = GOLDEN / case / name
        assert path.read_text() == golden.read_text(), \
            f"{case}/{name} differs from {golden}; if the change is meant: python tests/regen_golden.py"
    subprocess.run(["grub-script-check", str(produced["grub.cfg"])], check=True)
