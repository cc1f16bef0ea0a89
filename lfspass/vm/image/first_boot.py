"""First boot of a built image: the VM's OVMF wiring, a throwaway overlay, wait for the serial marker, power off."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from lfspass.errors import CheckFailed, ToolFailed
from lfspass.vm.children import Run
from lfspass.vm.image import guest_check
from lfspass.vm.image.root import MARKER
from lfspass.vm.plan import VmPlan
from lfspass.vm.qemu_argv import Boot, build_argv

# Said on the serial line when the boot cannot reach the marker any more: stop waiting.
DEAD_ENDS = ("Kernel panic", "grub rescue>", "\ngrub> ", "Give root password for maintenance", "You are in emergency mode",
             "ALERT!  UUID=")


def check_argv(plan: VmPlan, disk: Path, serial: Path, monitor: Path) -> list[str]:
    """The VM's own argv on ``disk`` under -snapshot: no VNC, no passthrough, user networking to this host only."""
    vm = dataclasses.replace(plan.vm, network="user", restrict=True,
                             vnc=dataclasses.replace(plan.vm.vnc, enabled=False))
    boot_plan = dataclasses.replace(plan, vm=vm, disk=disk)
    # -snapshot covers every drive (the disk and the VARS copy): the build's bytes stay as built.
    return build_argv(boot_plan, Boot(serial_log=serial, passthrough=False)) + [
        "-snapshot", "-monitor", f"unix:{monitor},server=on,wait=off"]


def _power_off(monitor: Path, proc: subprocess.Popen, grace: float, run: Run) -> str:
    """ACPI power button through the monitor; QEMU is killed when the guest has not stopped in ``grace`` s."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(monitor))
            s.sendall(b"system_powerdown\n")
            proc.wait(timeout=grace)
            return "powered off by the guest"
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        run.stop(proc)
    return "stopped (the guest did not power off in time; the overlay is thrown away)"


def first_boot(plan: VmPlan, disk: Path, folder: Path, timeout_s: float, say, run: Run | None = None) -> dict:
    """Boot ``disk`` once; returns the boot facts for installed.json, or raises naming the serial log.

    QEMU runs under ``run`` (a Run of its own in ``folder`` when none is given).
    """
    if run is None:
        folder.mkdir(parents=True, exist_ok=True)
        with Run(folder, plan.name, say) as own:
            return first_boot(plan, disk, folder, timeout_s, say, own)
    folder.mkdir(parents=True, exist_ok=True)
    serial, qemu_log = folder / "first-boot-serial.log", folder / "first-boot-qemu.log"
    serial.unlink(missing_ok=True)
    for f in (serial, qemu_log):   # made 0600 first: QEMU keeps the mode of a file it opens
        f.touch(mode=0o600)
        os.chmod(f, 0o600)
    # A unix socket path must stay short (108 bytes): keep it in /tmp, whatever the VM folder is.
    sock_dir = run.temp(Path(tempfile.mkdtemp(prefix="lfspass-mon-")))
    monitor = sock_dir / "monitor"
    argv = check_argv(plan, disk, serial, monitor)
    (folder / "first-boot-argv.json").write_text(json.dumps(argv, indent=1) + "\n")
    say(f"first boot: {plan.accel}, serial log {serial}")
    started = time.monotonic()
    with open(qemu_log, "wb") as out:
        proc = run.popen(["nice", "-n", "10", *argv], "QEMU (first boot)", stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT)
    line, cause, text = "", "", ""
    try:
        while not line:
            text = serial.read_text(errors="replace") if serial.exists() else ""
            # From the marker on: a getty prompt may share its line ("NAME login: lfspass-first-boot…").
            line = next((l[l.index(MARKER):].strip() for l in text.splitlines() if MARKER in l), "")
            dead = next((d for d in DEAD_ENDS if d in text), None)
            if line:
                break
            family: type[CheckFailed | ToolFailed] = CheckFailed   # the guest never said its marker
            if dead:
                cause = f"the guest stopped at '{dead.strip()}'"
            elif proc.poll() is not None:
                said = qemu_log.read_text(errors="replace").strip().splitlines()
                cause = f"QEMU exited ({proc.returncode}{': ' + said[-1][:200] if said else ''})"
                family = ToolFailed if proc.returncode else CheckFailed   # 0: the guest powered off first
            elif time.monotonic() - started > timeout_s:
                cause = f"no marker after {timeout_s / 60:g} min (raise installer.timeout for slow hosts)"
            if cause:
                raise family(f"{plan.name}: the image did not boot: {cause}; no '{MARKER}' in {serial}; "
                             f"QEMU's own log: {qemu_log}")
            time.sleep(1)
        seconds = time.monotonic() - started
        say(f"first boot: marker after {seconds:.0f} s: {line}")
        how = _power_off(monitor, proc, 90, run)
    finally:
        run.stop(proc)
        shutil.rmtree(sock_dir, ignore_errors=True)
    say(f"first boot: {how}, {time.monotonic() - started:.0f} s in all")
    report = guest_check.parse(text)
    if report is not None:
        say(f"first boot: the guest sees {len(report['pci'])} PCI device(s) "
            f"({sum(1 for d in report['pci'] if d['driver'])} with a driver)")
    return {"boot_seconds": round(seconds, 1), "marker": line, "serial_log": str(serial), "power_off": how,
            "guest_check": report}
