"""A user's install: the wheel alone, in a fresh virtual environment outside the clone.

The wheel holds every module of lfspass/ and plugins/; installed, every sub-command's --help
and one real call of each command exit as they should, without a traceback.  The sub-commands
come from the installed program's own parser, so a new one is checked without editing this file
(and test_every_command_has_a_real_call_here asks for its real call).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, absolute_module_sources, run_doit
from hostcases import write_case
from make_fixtures import build

# Dependencies come from the package index, as for any user; lfspass itself only from the wheel.
pytestmark = [pytest.mark.slow, pytest.mark.network("pypi")]

# What the build reads: copied, so the wheel cannot pick up a stale build/lib of the clone.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "lfspass", "plugins")

# The installed program's sub-command paths (["boot", "try"], ...), read from its own parser.
DISCOVER = """
import argparse, json
from lfspass.cli.main import COMMANDS, build_parser

def walk(parser, path):
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += walk(sub, path + [name])
    return found

print(json.dumps({"commands": list(COMMANDS), "paths": walk(build_parser(), [])}))
"""


@dataclass
class Install:
    wheel: Path
    venv: Path
    home: Path                 # the working folder: outside the clone
    env: dict[str, str]

    def run(self, *args: str, rc: int = 0) -> subprocess.CompletedProcess:
        """``lfspass ARGS`` from the venv: exit code ``rc`` and no traceback, else the test fails."""
        proc = subprocess.run([str(self.venv / "bin/lfspass"), *args], cwd=self.home, env=self.env,
                              capture_output=True, text=True)
        said = f"lfspass {' '.join(args)} (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == rc, said
        assert "Traceback" not in proc.stdout + proc.stderr, said
        return proc


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Install:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    # A user's environment: nothing of the clone or of this test run (its PYTHONPATH, LFSPASS_*).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("LFSPASS_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO)))
    env["XDG_CACHE_HOME"] = str(base / "xdg-cache")   # lfspass's caches (kconfig, downloads) start empty
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(base / "dist")],
                   check=True, cwd=base, env=env)
    wheel = next((base / "dist").glob("lfspass-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run([venv / "bin/pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, cwd=base, env=env)
    home = base / "home"
    home.mkdir()
    return Install(wheel, venv, home, env)


def test_the_wheel_holds_every_module_and_template(install) -> None:
    names = set(zipfile.ZipFile(install.wheel).namelist())
    source = {f"lfspass/{p.relative_to(REPO / 'lfspass').as_posix()}" for p in (REPO / "lfspass").rglob("*.py")}
    source |= {f"lfspass_plugins/{p.relative_to(REPO / 'plugins').as_posix()}" for p in (REPO / "plugins").rglob("*.py")}
    templates = {f"lfspass/templates/{p.name}" for p in (REPO / "lfspass/templates").iterdir() if p.is_file()}
    assert "lfspass/journal/rollback.py" in source and "lfspass_plugins/tesla_t10.py" in source and templates
    assert sorted(source - names) == [], "source files the wheel lacks (pyproject.toml / setup.py)"
    assert sorted({n for n in names if n.endswith(".py")} - source) == [], "wheel files with no source"
    assert sorted(templates - names) == [], "templates the wheel lacks"


def test_installed_outside_the_clone_with_the_builtin_plugins(install) -> None:
    where = subprocess.run([install.venv / "bin/python", "-c", "import lfspass_plugins, lfspass; "
                            "print(lfspass_plugins.__file__); print(lfspass.__file__)"],
                           cwd=install.home, env=install.env, capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(install.venv)) for path in where), where  # not the clone


@functools.cache
def _discovered(venv: Path, home: Path) -> dict:
    proc = subprocess.run([venv / "bin/python", "-c", DISCOVER], cwd=home, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_every_subcommand_answers_help(install) -> None:
    found = _discovered(install.venv, install.home)
    from lfspass.cli.main import COMMANDS  # the clone's

    # build_parser leaves out a command whose module is missing: the installed parser must have them all.
    top = [p[0] for p in found["paths"] if len(p) == 1]
    assert top == found["commands"] == list(COMMANDS), (top, found["commands"])
    assert ["boot", "try"] in found["paths"] and ["rollback"] in found["paths"]
    for path in found["paths"]:
        proc = install.run(*path, "--help")
        assert proc.stdout.startswith(f"usage: {' '.join(['lfspass', *path])}"), proc.stdout
    assert install.run("--version").stdout.strip() == "lfspass 0.1.0"
    proc = subprocess.run([install.venv / "bin/python", "-m", "lfspass", "--help"], cwd=install.home,
                          env=install.env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: lfspass"), proc.stderr
    proc = install.run(rc=2)
    assert proc.stderr.startswith("error: no command given"), proc.stderr


def test_every_command_has_a_real_call_here(install) -> None:
    commands = _discovered(install.venv, install.home)["commands"]
    missing = [c for c in commands if f"test_real_call_{c}" not in globals()]
    assert not missing, f"add a test_real_call_<command> to tests/test_wheel.py for {missing}"


# --- one real call of each command -----------------------------------------------------------

def test_real_call_plugins(install) -> None:
    owners = json.loads(install.run("plugins", "--json").stdout)["owners"]
    assert owners["10de:1e37"] == "tesla_t10" and owners["10de:1b39"] == "tesla_p10"
    assert owners["1234:11e8"] == "lab" and owners["*"] == "generic"


def test_real_call_kconfig(install, linux_tree: Path, tmp_path: Path) -> None:
    """The kernel's own scripts/kconfig/tests/choice, inside Debian's 6.1 tree (so the tree's conf
    decides, whichever engine a bare folder would get): alldefconfig holds what the kernel's test
    expects; a missing config without --base is one error line."""
    folder = linux_tree / "scripts/kconfig/tests/choice"
    cfg = tmp_path / "config"
    install.run("kconfig", "--tree", str(folder), "--config", str(cfg), "--base", "alldefconfig")
    got = cfg.read_text().splitlines()
    want = (folder / "alldef_expected_config").read_text().splitlines()
    assert [line for line in want if line not in got] == [], cfg.read_text()
    proc = install.run("kconfig", "--tree", str(folder), "--config", str(tmp_path / "none"), rc=2)
    assert proc.stderr.startswith("error:") and "--base" in proc.stderr


def test_real_call_groups(install, tmp_path: Path) -> None:
    data = json.loads(install.run("groups", "--host-root", str(build("dl380", tmp_path / "dl380")), "--json").stdout)
    g59 = next(g for g in data["groups"] if g["group"] == 59)
    assert g59["viable"] is True and [d["address"] for d in g59["devices"]] == ["0000:05:00.0"]


def test_real_call_doctor(install, tmp_path: Path) -> None:
    recipe = tmp_path / "seed.toml"
    recipe.write_text((REPO / "recipes/hpe-dl380-t10.toml").read_text())
    proc = install.run("doctor", "--host-root", str(build("dl380", tmp_path / "dl380")), "--recipe", str(recipe), "--json")
    checks = {c["id"]: c["status"] for c in json.loads(proc.stdout)["checks"]}
    assert checks["t10-bar1[82:00.0]"] == "pass" and checks["iommu"] == "pass"


def test_real_call_fetch(install, tmp_path: Path) -> None:
    """A real HTTP server on 127.0.0.1: the file arrives verified; a wrong sha256 is one error line."""
    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(1 << 20)
    (served / "blob.bin").write_bytes(payload)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/blob.bin"
        dest = tmp_path / "got.bin"
        install.run("fetch", url, "--sha256", hashlib.sha256(payload).hexdigest(), "-o", str(dest), "--no-progress")
        assert dest.read_bytes() == payload
        proc = install.run("fetch", url, "--sha256", "0" * 64, "-o", str(tmp_path / "bad.bin"), "--no-progress", rc=1)
        assert [line for line in proc.stderr.splitlines() if line.startswith("error:")], proc.stderr
        assert not (tmp_path / "bad.bin").exists()
    finally:
        server.shutdown()
        server.server_close()


def _host_with_a_kernel(tmp_path: Path) -> tuple[Path, Path]:
    """(recipe, root): the seed's host recipe with a kernel 'installed' and `doit grub vfio` run (by the clone)."""
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    boot = tmp_path / "root/boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz-6.10.5-lfs-12.2").write_bytes(b"a kernel")
    proc = run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return recipe, tmp_path / "root"


def test_real_call_boot(install, tmp_path: Path) -> None:
    recipe, _root = _host_with_a_kernel(tmp_path)
    before = json.loads(install.run("boot", "status", "--recipe", str(recipe), "--json").stdout)
    assert before["default"] is None and before["last_confirm"] is None
    install.run("boot", "status", "--recipe", str(recipe))
    tried = json.loads(install.run("boot", "try", "--recipe", str(recipe), "--json").stdout)["tried"]
    saved = build("dl380", tmp_path / "dl380")  # the seed's DL380 after that boot: 6.10.5, IOMMU on
    install.run("boot", "confirm", "--recipe", str(recipe), "--host-root", str(saved))
    after = json.loads(install.run("boot", "status", "--recipe", str(recipe), "--json").stdout)
    assert after["default"]["id"] == tried and after["last_confirm"]["ok"] is True
    assert "last confirm: ok" in install.run("boot", "status", "--recipe", str(recipe)).stdout


def test_real_call_rollback(install, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no journaled runs" in install.run("rollback", "--list", "--root", str(empty)).stdout
    _recipe, root = _host_with_a_kernel(tmp_path)
    runs = json.loads(install.run("rollback", "--list", "--root", str(root), "--json").stdout)
    assert runs and any(e["path"].endswith("grub.cfg") for r in runs for e in r["entries"]), runs
    assert runs[-1]["id"] in install.run("rollback", "--list", "--root", str(root)).stdout
    undone = json.loads(install.run("rollback", "--root", str(root), "--json").stdout)
    assert undone["run"] == runs[-1]["id"] and undone["restored"]
    created = [e["path"] for e in runs[-1]["entries"] if e["before"] is None]
    assert created and not [p for p in created if (root / p).exists()], created  # new files are gone again
    again = json.loads(install.run("rollback", "--list", "--root", str(root), "--json").stdout)
    assert next(r for r in again if r["id"] == undone["run"])["rolled_back"] is True


def _lab_bundle(install, lab_kernel, tmp_path: Path) -> tuple[dict, Path]:
    """The lab kernel (conftest's lab_kernel) packed by the installed program; a second host's recipe."""
    _recipe, paths = lab_kernel
    release = paths.modules_dir.name
    out = json.loads(install.run("bundle", "--recipe", str(REPO / "recipes/lab.toml"), "--release", release,
                                 "--out", str(tmp_path / "bundles"), "--json").stdout)
    text = (REPO / "recipes/lab.toml").read_text().replace('root = "../build/lab/root"', f'root = "{tmp_path / "host2"}"')
    host = tmp_path / "host2.toml"
    host.write_text(absolute_module_sources(text))
    return out, host


def test_real_call_bundle(install, lab_kernel, tmp_path: Path) -> None:
    out, _host = _lab_bundle(install, lab_kernel, tmp_path)
    assert Path(out["path"]).name == f"lfspass-{out['release']}-{out['digest']}.tar" and out["files"] > 3
    assert "bundle: " in install.run("bundle", "--recipe", str(REPO / "recipes/lab.toml"), "--release",
                                     out["release"], "--out", str(tmp_path / "bundles")).stdout


def test_real_call_install(install, lab_kernel, tmp_path: Path) -> None:
    out, host = _lab_bundle(install, lab_kernel, tmp_path)
    first = json.loads(install.run("install", "--bundle", out["path"], "--recipe", str(host), "--json").stdout)
    assert first["changed"] and (tmp_path / "host2/boot" / f"vmlinuz-{out['release']}-lfs-12.2").is_file()
    assert "nothing changed" in install.run("install", "--bundle", out["path"], "--recipe", str(host)).stdout
    proc = install.run("install", "--bundle", str(tmp_path / "missing.tar"), "--recipe", str(host), rc=2)
    assert proc.stderr.startswith("error:") and "carries its digest" in proc.stderr


def _tree(root: Path) -> dict[str, str]:
    """path -> file content or link target: what a command could have changed under ``root``."""
    return {str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else p.read_text(errors="replace")
            for p in sorted(root.rglob("*")) if p.is_symlink() or p.is_file()}


def test_real_call_bind(install, tmp_path: Path) -> None:
    """No kernel acts on a recorded tree, so every bind here ends in a refusal that leaves it as it was:
    the seed's malformed id, a `doctor --save` copy, and a tree where the first sysfs write fails."""
    root = build("dl380-t10-on-host", tmp_path / "t10")
    before = _tree(root)
    proc = install.run("bind", "10de:11b39", "--host-root", str(root), rc=2)
    assert proc.stderr.startswith("error: DEV '10de:11b39'") and len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = install.run("bind", "82:00.0", "--host-root", str(root), rc=2)
    assert "not a live sysfs" in proc.stderr and _tree(root) == before, proc.stderr
    # Live-shaped, but nouveau's unbind is not there to write.  (The plain files take the override
    # writes as text, where sysfs would take them as calls: the drivers are what a user checks.)
    (root / "sys/bus/pci/drivers_probe").write_text("")
    links = {p: os.readlink(p) for p in root.glob("sys/bus/pci/devices/0000:82:00.*/driver")}
    proc = install.run("bind", "82:00.0", "--host-root", str(root), rc=3)
    assert "drivers/nouveau/unbind failed" in proc.stderr and "82:00.0 is on nouveau, was nouveau" in proc.stderr
    assert {p: os.readlink(p) for p in links} == links and len(links) == 2
    assert not (root / "var/lib/lfspass/bound.json").exists()


def test_real_call_release(install, tmp_path: Path) -> None:
    """The seed's DL380 with its cards on vfio-pci since boot: `--recorded` leaves them (nothing was
    recorded at bind); a release whose write fails is one error line and the card stays."""
    root = build("dl380", tmp_path / "dl380")
    (root / "sys/bus/pci/drivers_probe").write_text("")
    before = _tree(root)
    out = json.loads(install.run("release", "--recorded", "82:00.0", "--host-root", str(root), "--json").stdout)
    assert [(d["address"], d["changed"], d["note"]) for d in out["devices"]] == \
        [("0000:82:00.0", False, "not recorded at bind: left alone")]
    assert _tree(root) == before
    proc = install.run("release", "82:00.0", "--host-root", str(root), rc=3)
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == \
        [line for line in proc.stderr.splitlines() if line.strip()], proc.stderr
    assert "put back 82:00.0 on vfio-pci" in proc.stderr
    assert os.readlink(root / "sys/bus/pci/devices/0000:82:00.0/driver").endswith("/vfio-pci")
