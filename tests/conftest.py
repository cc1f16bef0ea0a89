"""Shared fixtures: paths, the real Debian kernel tree, running the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINUX_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TEST_CACHE = REPO / "build" / "test-cache"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def linux_tree() -> Path:
    """Debian's linux-source-6.1, extracted once into build/test-cache (kept between runs)."""
    if not LINUX_TARBALL.exists():
        pytest.fail(f"{LINUX_TARBALL} missing: apt-get install linux-source-6.1 (see .ci/run)")
    dest = TEST_CACHE / "linux-source-6.1"
    marker = TEST_CACHE / "linux-source-6.1.extracted"
    if not marker.exists():
        TEST_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        subprocess.run(["tar", "-C", str(TEST_CACHE), "-xf", str(LINUX_TARBALL)], check=True)
        marker.write_text(str(LINUX_TARBALL.stat().st_mtime))
    return dest


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m lfspass ARGS`` as a user would, capturing text output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "lfspass", *args],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lfspass {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_doit(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``doit ARGS`` against the repo's dodo.py (its own .doit.db under cwd)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "--dir", str(cwd or REPO), *args],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True,
    )


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A bad input: exit != 0, exactly one stderr line starting 'error:', no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
