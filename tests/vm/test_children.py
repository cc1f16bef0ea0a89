"""Kills and signals: no child of a VM task outlives it, no temp disk or preseed stays, the rerun says what it cleaned.

Real processes throughout: a stand-in holder (a Python process with a Run and a shell child that
forks), `doit vm` on a netboot VM whose installer kernel panics (QEMU stays up, cheap), and, slow,
the image guest build killed during mmdebstrap and during its first boot.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit, _child_env
from lfspass.diskspace import allocated
from lfspass.errors import VmError
from lfspass.vm.children import RUN_FILE, reap

CACHE = REPO / "build/test-cache/apt-archives"   # the apt cache tests/vm/test_image.py shares
NETBOOT = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lfspass.vm.children import Run
    folder = Path(sys.argv[1])
    with Run(folder, "stand-in") as run:
        run.temp(folder / "disk.part").write_bytes(b"x" * 3_000_000)
        proc = run.popen(["sh", "-c", f"sleep 600 & sleep 601; : {folder}"], "sleeper", pidfile=folder / "child.pid")
        print("started", flush=True)
        proc.wait()
""")


def leftovers(folder: Path) -> list[str]:
    """Live processes whose command line or working folder names ``folder`` (this test's own excluded)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if state not in "ZX" and (str(folder) in cmd or cwd.startswith(str(folder))):
            out.append(f"{entry.name}: {cmd[:200]}")
    return out


def settle(folder: Path, limit: float = 60) -> list[str]:
    """What still runs of ``folder``'s processes once they had ``limit`` s to end (only stops a hung wait)."""
    end = time.monotonic() + limit
    while (left := leftovers(folder)) and time.monotonic() < end:
        time.sleep(0.2)
    return left


def _wait_for(check, proc: subprocess.Popen, limit: float, what: str):
    """Poll ``check`` until it returns something true; ``limit`` only stops a hung run."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if (got := check()):
            return got
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ended before {what}: {out[-2000:]} {err[-2000:]}")
        time.sleep(0.2)
    pytest.fail(f"no {what} after {limit} s")


def _child_running(folder: Path, label: str):
    def check():
        try:
            state = json.loads((folder / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None
        return next((c for c in state["children"] if c["label"].startswith(label)), None)
    return check


def _holder(folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=_child_env(None), start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == "started\n"
    return proc


# --- the machinery, with a stand-in child ------------------------------------------------------

def test_sigkill_of_the_owner_stops_the_whole_group_and_the_rerun_removes_the_temp(tmp_path):
    folder = tmp_path / "vm"
    holder = _holder(folder)
    child = int(_wait_for(lambda: (folder / "child.pid").exists() and (folder / "child.pid").read_text(), holder,
                          30, "child pid"))
    assert leftovers(folder), "the stand-in child should run now"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert settle(folder) == []   # the supervisor saw lfspass die and stopped sh and both sleeps
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().rsplit(")")[1][:3]
    assert (folder / "disk.part").exists() and (folder / RUN_FILE).exists()   # left for the rerun
    said = reap(folder, "stand-in")
    assert said == f"removed {folder / 'disk.part'} (3 MB)", said
    assert not (folder / "disk.part").exists() and not (folder / RUN_FILE).exists()
    assert reap(folder, "stand-in") == ""   # nothing left: nothing to say


def test_rerun_kills_a_group_whose_supervisor_was_killed_too(tmp_path):
    """Owner and supervisor both SIGKILLed (as an OOM killer might): the rerun kills what remains of the group."""
    folder = tmp_path / "vm"
    holder = _holder(folder)
    supervisor = _wait_for(_child_running(folder, "sleeper"), holder, 30, "run file")["pid"]
    _wait_for((folder / "child.pid").exists, holder, 30, "child pid")
    os.kill(supervisor, signal.SIGKILL)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    time.sleep(0.5)
    assert leftovers(folder), "the sleeps outlive a supervisor killed outright"
    said = reap(folder, "stand-in")
    assert said.startswith(f"killed sleeper PID {supervisor} and ") and "removed" in said, said
    assert leftovers(folder) == []


def test_a_live_owner_is_not_reaped(tmp_path):
    folder = tmp_path / "vm"
    holder = _holder(folder)
    try:
        with pytest.raises(VmError, match=f"another lfspass run \\(PID {holder.pid}\\)"):
            reap(folder, "stand-in")
        assert leftovers(folder)
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait()
    assert holder.returncode != 0
    assert settle(folder) == [] and not (folder / "disk.part").exists() and not (folder / RUN_FILE).exists()


def test_a_reused_pid_is_left_alone(tmp_path):
    """A run file naming a group that is not this run's (no token): nothing is killed, the temp still goes."""
    folder = tmp_path / "vm"
    folder.mkdir()
    other = subprocess.Popen(["sleep", "600"], process_group=0)
    try:
        start = int(Path(f"/proc/{other.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        (folder / "x.tmp").write_bytes(b"12")
        (folder / RUN_FILE).write_text(json.dumps({"token": "not-its", "owner": {"pid": 1, "start": 0}, "temps": [
            str(folder / "x.tmp")], "children": [{"label": "qemu", "pid": other.pid, "pgid": other.pid, "start": start}]}))
        said = reap(folder, "v")
        assert said.startswith(f"removed {folder / 'x.tmp'} (") and "killed" not in said, said
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# --- the netboot install under doit: QEMU on a panicking installer kernel ----------------------

def _install_recipe(tmp_path: Path, silence: int = 0) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    (media / "linux").write_bytes((NETBOOT / "linux").read_bytes())
    (media / "initrd.gz").write_bytes(b"not an initrd")   # the kernel panics; QEMU stays up
    path = tmp_path / "r.toml"
    path.write_text(f'[host]\nroot = "root"\n[kernel]\nversion = "6.10.5"\n[[vms]]\nname = "k"\naccel = "tcg"\n'
                    f'memory = "256M"\nvnc = {{ enabled = false }}\ndisk = {{ size = "64M" }}\n'
                    f'installer = {{ source = "netboot", netboot = "{media}", silence = {silence}, '
                    f'password_hash = "$6$salt$secrethash" }}\n')
    return path


def _start_doit(tmp_path: Path, path: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "--dir", str(tmp_path), "vm",
                             f"recipe={path}"], cwd=tmp_path, env=_child_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _qemu_up(folder: Path):
    pidfile = folder / "install/qemu.pid"
    return lambda: pidfile.exists() and int(pidfile.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_doit_during_the_install_is_one_line_and_leaves_nothing(tmp_path, sig):
    path = _install_recipe(tmp_path)
    folder = tmp_path / "root/var/lib/lfspass/vms/k"
    doit = _start_doit(tmp_path, path)
    qemu = _wait_for(_qemu_up(folder), doit, 120, "QEMU")
    assert (folder / "install/preseed.cfg").stat().st_mode & 0o777 == 0o600
    doit.send_signal(sig)
    out, err = doit.communicate(timeout=120)
    proc = subprocess.CompletedProcess(doit.args, doit.returncode, out, err)
    assert_one_error_line(proc, f"install stopped by {sig.name}", "run `doit vm` again")
    assert settle(folder) == [], "QEMU outlived doit"
    assert not Path(f"/proc/{qemu}/cmdline").exists() or not Path(f"/proc/{qemu}/cmdline").read_bytes()
    assert not (folder / "install/preseed.cfg").exists() and not (folder / RUN_FILE).exists()


def test_sigkill_of_doit_during_the_install_then_rerun(tmp_path):
    """kill -9 of doit: QEMU goes with it; the rerun removes the preseed, says so, and installs over the half-written disk."""
    path = _install_recipe(tmp_path, silence=15)
    folder = tmp_path / "root/var/lib/lfspass/vms/k"
    doit = _start_doit(tmp_path, path)
    qemu = _wait_for(_qemu_up(folder), doit, 120, "QEMU")
    doit.send_signal(signal.SIGKILL)
    doit.communicate()
    assert settle(folder) == [], "QEMU outlived doit"
    assert not Path(f"/proc/{qemu}/cmdline").exists() or not Path(f"/proc/{qemu}/cmdline").read_bytes()
    preseed = folder / "install/preseed.cfg"
    assert "secrethash" in preseed.read_text() and preseed.stat().st_mode & 0o777 == 0o600
    # What the installer had written before the kill: the rerun must not call it the user's data.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", str(folder / "k.qcow2")], check=True,
                   capture_output=True)
    size = allocated(preseed)
    again = run_doit("vm", f"recipe={path}", cwd=tmp_path)
    cleaned = [line for line in again.stdout.splitlines() if "cleaned up after an interrupted run" in line]
    assert cleaned == [f"k: cleaned up after an interrupted run: removed {preseed} ({size} bytes)"], \
        again.stdout + again.stderr
    assert "holds only what an unfinished install wrote" in again.stdout, again.stdout
    assert_one_error_line(again, "no installer output for 15 s")   # the panicked kernel, this time seen through
    assert int((folder / "install/qemu.pid").read_text()) != qemu
    assert settle(folder) == [] and not preseed.exists() and not (folder / RUN_FILE).exists()


# --- slow: the image guest build killed during mmdebstrap and during its first boot -------------

@pytest.mark.slow
@pytest.mark.network("debian")
def test_sigkill_during_the_image_build_then_rerun_completes(tmp_path):
    """kill -9 of doit during mmdebstrap, again during the first boot: nothing runs after either, nothing stays
    mounted, the reruns say what they cleaned, no temp disk stays, and the last run builds the disk."""
    path = _image_recipe(tmp_path)
    folder = tmp_path / "root/var/lib/lfspass/vms/img"
    env = {"LFSPASS_APT_CACHE": str(CACHE)}
    doit = _start_doit(tmp_path, path, env)
    _wait_for(lambda: (folder / ".image-build/root/etc").is_dir() and _child_running(folder, "mmdebstrap")(), doit,
              600, "mmdebstrap at work")
    doit.send_signal(signal.SIGKILL)
    doit.communicate()
    assert settle(tmp_path, 180) == [], "mmdebstrap or its apt outlived doit"
    assert str(folder) not in Path("/proc/self/mountinfo").read_text()   # mmdebstrap unmounted on its way out
    doit = _start_doit(tmp_path, path, env)
    _wait_for(_child_running(folder, "QEMU (first boot)"), doit, 1800, "the first boot")
    (tmpdisk,) = folder.glob(".img.qcow2.*.tmp")
    doit.send_signal(signal.SIGKILL)
    out, _ = doit.communicate()
    assert f"img: cleaned up after an interrupted run: removed {folder / '.image-build'} (" in out, out
    assert settle(tmp_path) == [], "QEMU outlived doit"
    size = allocated(tmpdisk)
    final = run_doit("vm", f"recipe={path}", cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert f"img: cleaned up after an interrupted run: removed {tmpdisk} ({size / 1e6:.0f} MB)" in final.stdout
    assert not list(folder.glob(".img.qcow2.*")) and not (folder / ".image-build").exists()
    assert (folder / "installed.json").is_file() and (folder / "img.qcow2").is_file()
    assert settle(tmp_path) == [] and not (folder / RUN_FILE).exists()


def _image_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.toml"
    path.write_text('[host]\nroot = "root"\n[kernel]\nversion = "6.10.5"\ntimestamp = "2024-01-01 00:00:00 UTC"\n'
                    '[[vms]]\nname = "img"\naccel = "tcg"\nmemory = "1G"\ncpus = 1\nvnc = { enabled = false }\n'
                    'disk = { size = "2G" }\ninstaller = { source = "image" }\n')
    return path
