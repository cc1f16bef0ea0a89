"""Golden files for what `doit grub vfio` writes, per vendor, init system and VFIO mode."""
from __future__ import annotations

import os
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


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_host_files(tmp_path: Path, case: str) -> None:
    recipe = write_case(tmp_path, case)
    proc = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = tmp_path / "root"
    produced = {name: root / rel for name, rel in OUTPUTS.items() if (root / rel).exists()}
    # Exactly one autoload file, the one this init system reads.
    assert ("sysconfig-modules" in produced) != ("modules-load.conf" in produced)
    for name, path in produced.items():
        golden = GOLDEN / case / name
        if os.environ.get("LFSPASS_REGEN_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(path.read_text())
        assert path.read_text() == golden.read_text(), f"{case}/{name} differs from {golden}"
    subprocess.run(["grub-script-check", str(produced["grub.cfg"])], check=True)
    assert sorted(p.name for p in (GOLDEN / case).iterdir()) == sorted(produced)
