"""A user's install: the wheel alone, in a fresh virtual environment outside the clone, has the built-in plugins."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_lists_the_builtin_plugins(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    str(REPO), "-w", str(dist)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("lfspass-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lfspass_plugins/tesla_t10.py" in names and "lfspass/templates/grub-entry.j2" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Dependencies come from the package index, as for any user; lfspass itself only from the wheel.
    subprocess.run([venv / "bin/pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, cwd=tmp_path)
    proc = subprocess.run([venv / "bin/lfspass", "plugins", "--json"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    owners = listed["owners"]
    assert owners["10de:1e37"] == "tesla_t10" and owners["10de:1b39"] == "tesla_p10"
    assert owners["1234:11e8"] == "lab" and owners["*"] == "generic"
    where = subprocess.run([venv / "bin/python", "-c", "import lfspass_plugins, lfspass; "
                            "print(lfspass_plugins.__file__); print(lfspass.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where  # not the clone
