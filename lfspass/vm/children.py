"""Children that do not outlive lfspass: a group of their own, signalled when lfspass dies, reaped by the next run.

A VM task's long-running children (mmdebstrap, QEMU) start through ``Run.popen``: in a process
group of their own (so a stop reaches what they started too) and with ``PR_SET_PDEATHSIG``, so
the kernel signals them when lfspass ends, even by SIGKILL.  The kernel sends that signal when
the *thread* that started the child exits: start them from the thread that waits for them.

The run file (``.lfspass-run.json`` in the VM folder) lists the owner, every child's group and
the temp files (a half-built disk, the preseed with its password hash) before they exist.  A
run that ends in any way short of SIGKILL stops the groups and removes the temps and the file;
after a SIGKILL the next run finds the file, kills what is still running of those groups (only
processes that carry the run's token in their environment), removes the temps, and says so in
one line.  While a Run is open, SIGTERM, SIGINT and SIGHUP raise ``Interrupted``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfspass.diskspace import allocated
from lfspass.errors import VmError
from lfspass.fsutil import write_atomic

RUN_FILE = ".lfspass-run.json"
TOKEN_ENV = "LFSPASS_RUN"
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


class Interrupted(VmError):
    """SIGTERM, SIGINT or SIGHUP arrived while a Run was open."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


SUPERVISE = Path(__file__).with_name("supervise.py")   # run by path: standard library only, no lfspass import


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[2]), int(fields[19])


def _carries(pid: int, token: str) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in env


def _members(pgid: int, start: int, token: str) -> list[int]:
    """Live processes of group ``pgid`` started with or after its leader that carry the run's token."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[0] not in "ZX" and st[1] == pgid and st[2] >= start and _carries(int(entry.name), token):
                out.append(int(entry.name))
    return out


def _gone(pids: list[int], limit: float) -> None:
    """Wait (at most ``limit`` s) until none of ``pids`` runs any more."""
    end = time.monotonic() + limit
    while time.monotonic() < end and any((st := _stat(p)) and st[0] not in "ZX" for p in pids):
        time.sleep(0.1)


def _size(path: Path) -> str:
    n = allocated(path)
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n} bytes"


def remove(path: Path) -> bool:
    """Remove a temp file or folder; a folder with something still mounted in it is left (unmounted first)."""
    if path.is_dir() and not path.is_symlink():
        from lfspass.vm.image.root import remove_tree
        remove_tree(path)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
    return not path.exists()


def _ended(pid: int) -> bool:
    """True once our child ``pid`` has exited (it is left unreaped, so its number stays ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass   # the group is gone already


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in "ZX" and st[2] == start


def reap(folder: Path, what: str) -> str:
    """What an interrupted run left in ``folder`` is stopped and removed; returns what was done ('' for nothing).

    A run file whose owner still runs is another lfspass working on the same VM: an error.
    """
    path = folder / RUN_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return ""
    except (OSError, ValueError):
        state = {}
    owner = state.get("owner", {})
    if owner.get("pid") != os.getpid() and _alive(owner.get("pid", 0), owner.get("start", -1)):
        raise VmError(f"{what}: another lfspass run (PID {owner['pid']}) is working on it ({path}); wait for it to "
                      f"end, or stop it with `kill {owner['pid']}`")
    done = []
    for child in state.get("children", []):
        pids = _members(child["pgid"], child["start"], state.get("token", ""))
        if not pids:
            continue
        _killpg(child["pgid"])
        _gone(pids, 30)
        done.append(f"killed {child['label']} PID {child['pid']}"
                    + (f" and {len(pids) - 1} more of its group" if len(pids) > 1 else ""))
    for name in state.get("temps", []):
        temp = Path(name)
        if temp.exists() or temp.is_symlink():
            size = _size(temp)
            if remove(temp):
                done.append(f"removed {temp} ({size})")
    path.unlink(missing_ok=True)
    return ", ".join(done) or "nothing was left running"


def cleanup(folder: Path, what: str, say: Callable[[str], None] = print) -> None:
    """reap(), said in one line when an interrupted run left something."""
    cleaned = reap(folder, what) if (folder / RUN_FILE).exists() else ""
    if cleaned:
        say(f"{what}: cleaned up after an interrupted run: {cleaned}")


class Run:
    """One task's children and temp files, listed in ``folder``/.lfspass-run.json while they may exist."""

    def __init__(self, folder: Path, what: str, say: Callable[[str], None] = print) -> None:
        self.folder, self.what, self.say = folder, what, say
        self.path = folder / RUN_FILE
        self.token = uuid.uuid4().hex
        self.children: list[dict[str, Any]] = []
        self.procs: list[subprocess.Popen] = []
        self.temps: list[Path] = []
        self.saved: dict[int, Any] = {}
        self.interrupted: int | None = None

    def _save(self) -> None:
        start = _stat(os.getpid())
        write_atomic(self.path, json.dumps({
            "what": self.what, "token": self.token, "owner": {"pid": os.getpid(), "start": start[2] if start else 0},
            "children": self.children, "temps": [str(t) for t in self.temps]}, indent=1) + "\n", mode=0o600)

    def _signal(self, signum: int, frame: object) -> None:
        if self.interrupted is None:
            self.interrupted = signum
            for sig in SIGNALS:   # the cleanup that follows is not cut short by a second signal
                signal.signal(sig, signal.SIG_IGN)
            raise Interrupted(signum)

    def __enter__(self) -> Run:
        self.folder.mkdir(parents=True, exist_ok=True)
        cleanup(self.folder, self.what, self.say)
        self._save()
        if threading.current_thread() is threading.main_thread():   # handlers belong to the main thread
            self.saved = {s: signal.signal(s, self._signal) for s in SIGNALS}
        return self

    def temp(self, path: Path) -> Path:
        """``path`` will be removed when the run ends, or by the next run after a kill; listed before it exists."""
        self.temps.append(path)
        self._save()
        return path

    def popen(self, argv: list[str], label: str, *, grace: float = 5, pidfile: Path | None = None,
              **popen: Any) -> subprocess.Popen:
        """subprocess.Popen of ``argv`` under the supervisor (supervise.py), in a group of its own, listed in the run file.

        ``grace``: seconds between SIGTERM and SIGKILL when stopped; ``pidfile`` gets the child's own pid.
        The returned Popen is the supervisor's: it ends as the child ends, with its exit status.
        """
        env = {**(popen.pop("env", None) or os.environ), TOKEN_ENV: self.token}
        shim = [sys.executable, "-I", "-S", str(SUPERVISE), str(os.getpid()), str(grace), str(pidfile or "-"), *argv]
        proc = subprocess.Popen(shim, env=env, process_group=0, **popen)
        st = _stat(proc.pid)
        self.children.append({"label": label, "pid": proc.pid, "pgid": proc.pid, "start": st[2] if st else 0,
                              "grace": grace})
        self.procs.append(proc)
        self._save()
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """The child's group asked to stop (its supervisor sends SIGTERM, SIGKILL after the grace time).

        lfspass sends SIGKILL to the group itself only while the number is surely still this run's:
        the supervisor not yet reaped (a zombie keeps the number), or members carrying the token.
        """
        child = next((c for c in self.children if c["pid"] == proc.pid), {"start": 0, "grace": 5})
        if proc.returncode is None:
            if not _ended(proc.pid):
                proc.send_signal(signal.SIGTERM)
                end = time.monotonic() + child["grace"] + 5
                while not _ended(proc.pid) and time.monotonic() < end:
                    time.sleep(0.05)
            pids = _members(proc.pid, child["start"], self.token)
            _killpg(proc.pid)
        else:
            pids = _members(proc.pid, child["start"], self.token)
            if pids:
                _killpg(proc.pid)
        proc.wait()
        _gone(pids, 30)

    def __exit__(self, *exc: object) -> None:
        try:
            for proc in self.procs:
                self.stop(proc)
            for temp in self.temps:
                remove(temp)
            self.path.unlink(missing_ok=True)
        finally:
            for sig, handler in self.saved.items():
                signal.signal(sig, handler)

    def keep(self, path: Path) -> None:
        """``path`` is no temp any more (a finished disk): left where it is."""
        self.temps = [t for t in self.temps if t != path]
        self._save()

