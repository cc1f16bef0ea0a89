"""The supervisor each child of a VM task runs under (lfspass.vm.children starts it by path, standard library only).

It leads the child's process group and asks the kernel for SIGTERM when lfspass dies
(PR_SET_PDEATHSIG, which follows the thread that started it).  On that, or on SIGTERM, SIGINT
or SIGHUP from lfspass, it sends SIGTERM to the whole group (mmdebstrap's main process ignores
signals and waits for its worker; apt and dpkg run below it), SIGKILL after the grace time,
and ends as the child ended.

    python -I -S supervise.py PARENT_PID GRACE_S PIDFILE|- ARGV...
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, grace, pidfile, argv = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    got: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda n, f: got.append(n))
    if os.getppid() != parent:   # lfspass ended before the request took hold
        sys.exit(128 + signal.SIGTERM)
    child = subprocess.Popen(argv)
    if pidfile != "-":
        with open(pidfile + ".tmp", "w") as fh:
            fh.write(f"{child.pid}\n")
        os.replace(pidfile + ".tmp", pidfile)
    deadline = None
    while child.poll() is None:
        if got and deadline is None:
            deadline = time.monotonic() + grace
            os.killpg(0, signal.SIGTERM)
        elif deadline is not None and time.monotonic() > deadline:
            os.killpg(0, signal.SIGKILL)
        time.sleep(0.05)
    if got:
        os.killpg(0, signal.SIGKILL)   # what the child left of the group, and this supervisor
    if child.returncode < 0:   # end as the child did: killed by the same signal
        signal.signal(-child.returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -child.returncode)
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
