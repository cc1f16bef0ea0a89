"""Unattended Debian install: installer kernel + preseed through guestfwd, a watched serial log, run once."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lfspass.errors import CheckFailed, ToolFailed, VmError
from lfspass.fsutil import require_tool, write_atomic
from lfspass.vm.children import Interrupted, Run, cleanup
from lfspass.vm.guest_disk import data_extents, private_dir, take_snapshot
from lfspass.vm.preseed import PreseedServer
from lfspass.vm.qemu_argv import Boot, build_argv
from lfspass.vm.install_watch import SerialWatch
from lfspass.render import render
from lfspass.vm.plan import VmPlan

GUEST_HOST, GUEST_DNS = "10.0.2.100", "10.0.2.3"   # slirp: a guestfwd address and its DNS
DONE_MARKER = "lfspass-install-done"
REINSTALL_ENV = "LFSPASS_REINSTALL"


def install_dir(plan: VmPlan) -> Path:
    return plan.dir / "install"


def marker_path(plan: VmPlan) -> Path:
    return plan.dir / "installed.json"


def iso_path(plan: VmPlan) -> Path | None:
    inst = plan.vm.installer
    if inst.source != "iso":
        return None
    if inst.iso:
        return Path(inst.iso)
    if not inst.iso_url:
        raise VmError(f"{plan.where}.installer: source = \"iso\" needs iso (a local file) or iso_url")
    if not inst.iso_sha256 and not inst.sums_url:
        raise VmError(f"{plan.where}.installer.iso_url needs iso_sha256 or sums_url (+ signature_url): "
                      "lfspass does not install from unverified media")
    return install_dir(plan) / (Path(urlsplit(inst.iso_url).path).name or "installer.iso")


def kernel_initrd(plan: VmPlan) -> tuple[Path, Path]:
    """Where the installer's kernel and initrd are (netboot package) or will be (ISO extract)."""
    if plan.vm.installer.source == "netboot":
        base = Path(plan.vm.installer.netboot)
        return base / "linux", base / "initrd.gz"
    return install_dir(plan) / "vmlinuz", install_dir(plan) / "initrd.gz"


def extract_iso(plan: VmPlan) -> None:
    """Copy /install.amd/{vmlinuz,initrd.gz} out of the ISO with xorriso."""
    iso, (kernel, initrd) = iso_path(plan), kernel_initrd(plan)
    if iso is None:
        return
    if not iso.is_file():
        raise VmError(f"{iso}: installer ISO missing; run `doit vm` (fetch) or fix {plan.where}.installer.iso")
    tool = require_tool("xorriso", "xorriso")
    private_dir(plan.dir)
    private_dir(kernel.parent)
    tmp_k, tmp_i = kernel.with_suffix(".tmp"), initrd.with_suffix(".tmp")
    proc = subprocess.run([tool, "-osirrox", "on", "-indev", str(iso), "-extract", "/install.amd/vmlinuz", str(tmp_k),
                           "-extract", "/install.amd/initrd.gz", str(tmp_i)], capture_output=True, text=True)
    if proc.returncode != 0 or not (tmp_k.is_file() and tmp_i.is_file()):
        tmp_k.unlink(missing_ok=True)
        tmp_i.unlink(missing_ok=True)
        raise VmError(f"{iso} has no /install.amd/vmlinuz and initrd.gz (xorriso: {proc.stderr.strip()[-200:]}); "
                      "use a Debian amd64 netinst or DVD image")
    os.replace(tmp_k, kernel)
    os.replace(tmp_i, initrd)


def preseed_text(plan: VmPlan) -> str:
    inst = plan.vm.installer
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", inst.user):
        raise VmError(f"{plan.where}.installer.user = {inst.user!r}: use a lower-case login such as debian")
    if any(c in inst.ssh_key + inst.password_hash for c in "'\n\\"):
        raise VmError(f"{plan.where}.installer: ssh_key and password_hash must be one line without quotes or backslashes")
    hostname = re.sub(r"[^a-z0-9-]", "-", plan.name.lower()).strip("-")[:63] or "debian"
    context = {"name": plan.name, "recipe": str(plan.recipe.path), "hostname": hostname, "mirror": inst.mirror,
               "user": inst.user, "password_hash": inst.password_hash, "ssh_key": inst.ssh_key, "done_marker": DONE_MARKER}
    return render(Path(inst.preseed) if inst.preseed else "preseed.cfg.j2", **context)


def unattended_append(plan: VmPlan) -> list[str]:
    hostname = re.sub(r"[^a-z0-9-]", "-", plan.name.lower()).strip("-") or "debian"
    return ["auto=true", "priority=critical", f"url=http://{GUEST_HOST}/preseed.cfg",
            f"netcfg/get_nameservers={GUEST_DNS}", f"hostname={hostname}", "domain=",
            "console=ttyS0,115200n8", *plan.vm.installer.append]


def interactive_boot(plan: VmPlan) -> Boot:
    """The seed's way, kept: the installer on the VNC screen, typed by hand."""
    iso = iso_path(plan)
    if iso is not None:
        return Boot(cdrom=iso, passthrough=False)
    kernel, initrd = kernel_initrd(plan)
    return Boot(kernel=kernel, initrd=initrd, append=list(plan.vm.installer.append), passthrough=False)


@dataclass
class InstallRun:
    """A running unattended install: its QEMU, preseed server and serial log."""

    plan: VmPlan
    proc: subprocess.Popen
    server: PreseedServer
    serial_log: Path
    argv: list[str] = field(default_factory=list)
    run: Run | None = None
    own_run: bool = False   # start_install made the Run itself: stop() ends it

    def finished_ok(self) -> bool:
        try:
            return DONE_MARKER in self.serial_log.read_text(errors="replace")
        except OSError:
            return False

    def stop(self) -> None:
        """QEMU ends (asked first, then killed), the socket and the served preseed go away."""
        if self.run is not None:
            self.run.stop(self.proc)
        self.server.stop()
        # The copy holds the password hash; it served its purpose.
        (install_dir(self.plan) / "preseed.cfg").unlink(missing_ok=True)
        if self.own_run and self.run is not None:
            self.run.__exit__(None, None, None)


def _private_file(path: Path) -> None:
    """An empty 0600 file QEMU then writes into (it keeps an existing file's mode)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def start_install(plan: VmPlan, run: Run | None = None) -> InstallRun:
    """Render the preseed, start its server and the relay, and start QEMU on the installer (under ``run``,
    or a Run of its own that ``InstallRun.stop`` ends)."""
    extract_iso(plan)
    kernel, initrd = kernel_initrd(plan)
    for f in (kernel, initrd):
        if not f.is_file():
            raise VmError(f"{f}: installer file missing; apt-get install debian-installer-12-netboot-amd64, "
                          f"or set {plan.where}.installer.netboot")
    text = preseed_text(plan)
    folder = install_dir(plan)
    private_dir(plan.dir)
    private_dir(folder)
    own = run is None
    if run is None:
        run = Run(plan.dir, plan.name).__enter__()
    server, proc = PreseedServer(text, folder), None
    try:
        # Listed first: a killed run's preseed (the password hash) is removed by the next run.
        write_atomic(run.temp(folder / "preseed.cfg"), server.body, mode=0o600)  # readable by its owner during the install
        relay = folder / "relay.py"
        # QEMU splits option values at commas and runs one command per guest connection,
        # so the relay lives in a file and the guestfwd value stays comma-free.
        write_atomic(relay, server.relay_text(), mode=0o700)
        serial = folder / "serial.log"
        _private_file(serial)
        boot = Boot(kernel=kernel, initrd=initrd, append=unattended_append(plan), cdrom=iso_path(plan),
                    serial_log=serial, guestfwd=f"tcp:{GUEST_HOST}:80-cmd:{shlex.quote(str(relay))}", passthrough=False,
                    no_reboot=True)
        argv = build_argv(plan, boot)
        write_atomic(folder / "qemu-argv.json", json.dumps(argv, indent=1) + "\n", mode=0o600)
        qemu_log = folder / "qemu.log"
        _private_file(qemu_log)
        pidfile = folder / "qemu.pid"
        pidfile.unlink(missing_ok=True)
        with open(qemu_log, "wb") as log:   # qemu.pid gets QEMU's own pid (proc is its supervisor)
            proc = run.popen(argv, "QEMU (installer)", pidfile=pidfile, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT)
    except BaseException:
        if proc is not None:
            run.stop(proc)
        server.stop()
        (folder / "preseed.cfg").unlink(missing_ok=True)
        if own:
            run.__exit__(None, None, None)
        raise
    return InstallRun(plan, proc, server, serial, argv, run, own)


def unfinished_path(plan: VmPlan) -> Path:
    """Says an install started on the disk while it was empty; removed once the install finished."""
    return install_dir(plan) / "unfinished.json"


def _disk_id(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino]


def only_unfinished_install(plan: VmPlan) -> bool:
    """The disk holds nothing but what an unfinished install of this VM wrote (it was empty when that began)."""
    try:
        said = json.loads(unfinished_path(plan).read_text())
    except (OSError, ValueError):
        return False
    return said.get("disk") == str(plan.disk) and said.get("id") == _disk_id(plan.disk)


def guard_disk(plan: VmPlan, force: bool, say=print) -> None:
    """Refuse to install onto a disk that holds data, unless asked twice; then snapshot it first."""
    if not plan.disk.exists():
        raise VmError(f"{plan.disk}: the VM's disk is missing; run `doit vm:disk:{plan.name}` first")
    used = data_extents(plan.disk)
    if not used:
        write_atomic(unfinished_path(plan), json.dumps({"disk": str(plan.disk), "id": _disk_id(plan.disk)}) + "\n",
                     mode=0o600)
        return
    size = sum(n for _, n in used)
    if only_unfinished_install(plan):
        say(f"{plan.name}: {plan.disk} holds only what an unfinished install wrote (it was empty when that install "
            f"began): installing over it")
        return
    if not (force and plan.vm.installer.overwrite):
        raise VmError(f"{plan.disk} already holds data ({size} bytes written, first at offset {used[0][0]}); "
                      f"the installer would partition it, so it was not started. Either point "
                      f"{plan.where}.disk.path at a new image, or to install over it on purpose set "
                      f"{plan.where}.installer.overwrite = true and run with {REINSTALL_ENV}=1 "
                      "(lfspass snapshots the disk first)")
    snap = "lfspass-before-install-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    take_snapshot(plan.disk, snap)
    say(f"{plan.name}: {plan.disk} held data: saved as internal snapshot {snap}; to go back to it: "
        f"qemu-img snapshot -a {snap} {plan.disk} (with the VM stopped)")


def run_install(plan: VmPlan, *, force: bool | None = None, say=print) -> bool:
    """Install once; True when an install ran now.  ``force`` (or $LFSPASS_REINSTALL=1) installs again."""
    marker = marker_path(plan)
    force = bool(os.environ.get(REINSTALL_ENV)) if force is None else force
    cleanup(plan.dir, plan.name, say)   # a killed run's QEMU (it holds the disk) and preseed go first
    if marker.exists() and not force:
        return False
    if plan.vm.installer.source == "netboot" and plan.vm.restrict:
        say(f"{plan.name}: note: restrict = true keeps the netboot installer off the mirror; "
            "the install can only finish with network access (set restrict = false)")
    private_dir(plan.dir)
    private_dir(install_dir(plan))
    guard_disk(plan, force, say)
    stuck, run = None, None
    try:
        # QEMU and the server stop, and the preseed goes, on every way out; after a SIGKILL the next
        # run does it (SIGTERM, SIGINT and SIGHUP raise Interrupted).
        with Run(plan.dir, plan.name, say) as children:
            try:
                run = start_install(plan, children)
                say(f"{plan.name}: installing (serial log {run.serial_log}; VNC {plan.vm.vnc.listen}:{5900 + plan.vm.vnc.display})")
                limit, started = plan.vm.installer.timeout * 60, time.monotonic()
                watch = SerialWatch(run.serial_log, plan.vm.installer.silence)
                next_note = started + 60
                while True:
                    try:
                        run.proc.wait(timeout=1)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if (stuck := watch.poll()) is not None:
                        break
                    now = time.monotonic()
                    if now - started > limit:
                        raise CheckFailed(f"{plan.name}: install still running after {plan.vm.installer.timeout} min; "
                                          f"stopped it. See {run.serial_log}; raise installer.timeout for slow hosts")
                    if now >= next_note:  # a line a minute: long installs show they are alive
                        next_note += 60
                        say(f"{plan.name}: installing, {int(now - started) // 60} min, preseed fetched: "
                            f"{'yes' if 'GET /preseed.cfg' in run.server.requests else 'not yet'}")
            finally:
                if run is not None:
                    run.stop()
    except Interrupted as exc:
        raise VmError(f"{plan.name}: install {exc}; QEMU and the preseed server were stopped and the preseed "
                      f"removed; run `doit vm` again to start over", exit_code=128 + exc.signum) from None
    assert run is not None
    if stuck is not None:
        raise CheckFailed(f"{plan.name}: install stopped: {stuck}. See {run.serial_log}; fix the cause (network, mirror, "
                          f"preseed), then run `{REINSTALL_ENV}=1 doit vm:install:{plan.name}`")
    if run.proc.returncode != 0 or not run.finished_ok():
        try:
            said = [l for l in (install_dir(plan) / "qemu.log").read_text(errors="replace").splitlines() if l.strip()]
        except OSError:
            said = []
        last = f", QEMU said: {said[-1].strip()[:200]}" if said else ""
        # A QEMU that failed is a tool failure; one that ended without the marker, a failed install.
        family = ToolFailed if run.proc.returncode != 0 else CheckFailed
        raise family(f"{plan.name}: install did not finish (QEMU exit {run.proc.returncode}{last}; no '{DONE_MARKER}' "
                     f"in {run.serial_log}); read that log and {install_dir(plan) / 'qemu.log'}, then run "
                     f"`{REINSTALL_ENV}=1 doit vm:install:{plan.name}`")
    unfinished_path(plan).unlink(missing_ok=True)
    write_atomic(marker, json.dumps({"vm": plan.name, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "source": plan.vm.installer.source}, indent=1) + "\n")
    say(f"{plan.name}: installed; start it with {plan.dir / (plan.name + '.sh')}")
    return True
