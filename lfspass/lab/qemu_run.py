"""The lab's one QEMU run: the lab machine's argv, start it, wait for the guest to save its host
state and stop (or time out), kill what is left, and decode what the guest saved."""
from __future__ import annotations

import base64
import binascii
import gzip
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import CheckFailed, ToolFailed
from lfspass.fsutil import require_tool

BEGIN_MARK = "----- BEGIN lfspass-lab host -----"
END_MARK = "----- END lfspass-lab host -----"
# What a kernel prints last when it stops the machine; one that cannot power off (no ACPI from
# the firmware) halts instead, and QEMU then runs on until it is killed.
STOPPED = re.compile(r"reboot: (System halted|Power down)")
POLL_S = 0.5


@dataclass(frozen=True)
class GuestFiles:
    """One boot's folder: the console log, the second serial port, the decoded host state, the verdict."""

    dir: Path

    @property
    def guest_log(self) -> Path:
        return self.dir / "guest.log"        # ttyS0: kernel console and /init's messages

    @property
    def host_out(self) -> Path:
        return self.dir / "guest-host.b64"   # ttyS1: only the saved host

    @property
    def saved(self) -> Path:
        return self.dir / "host"             # a `doctor --save` folder, read with --host-root

    @property
    def verdict(self) -> Path:
        return self.dir / "verdict.json"


def machine_argv(console_log: Path, host_out: Path, iommu: bool, memory: str, accel: str,
                 firmware: list[str], boot: list[str]) -> list[str]:
    """The lab machine (docs/explanation/lab.md): q35, two serial ports to files, VT-d when asked, `edu`, no network.

    ``firmware`` goes before the IOMMU (OVMF's pflash drives), ``boot`` after the devices
    (``-kernel …`` or the disks GRUB boots from).
    """
    # TCG by default: a /dev/kvm that exists can still hang a guest (nested setups), and
    # the lab's timings are quoted for TCG.
    argv = [require_tool("qemu-system-x86_64", "qemu-system-x86"),
            "-machine", "q35,kernel-irqchip=split", "-accel", accel, "-m", memory,
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{console_log}", "-serial", f"file:{host_out}", *firmware]
    if iommu:
        argv += ["-device", "intel-iommu,intremap=on"]  # before the PCI devices it translates for
    return argv + ["-device", "edu", *boot]


def kernel_argv(kernel: Path, initrd: Path, cmdline: list[str], console_log: Path, host_out: Path,
                iommu: bool = True, memory: str = "256M", accel: str = "tcg") -> list[str]:
    """The lab machine booting ``kernel`` and ``initrd`` directly (``-kernel``), as GRUB's entry would."""
    return machine_argv(console_log, host_out, iommu, memory, accel, [],
                        ["-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(cmdline)])


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _saved_and_stopped(console_log: Path, host_out: Path) -> bool:
    try:
        return END_MARK in host_out.read_text(errors="replace") and bool(
            STOPPED.search(console_log.read_text(errors="replace")))
    except OSError:
        return False


def run_qemu(argv: list[str], console_log: Path, host_out: Path, timeout: int) -> float:
    """Run QEMU until it exits, or until the guest has sent its host state and stopped; seconds taken.

    Over ``timeout`` the guest never said it was done: CheckFailed.  QEMU failing: ToolFailed.
    """
    for path in (console_log, host_out):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    out, done = "", False
    try:
        while True:
            try:
                # communicate() keeps reading QEMU's own output while it waits, so the pipe never fills.
                out = proc.communicate(timeout=POLL_S)[0]
                break
            except subprocess.TimeoutExpired:
                pass
            if _saved_and_stopped(console_log, host_out):
                done = True
                break
            if time.monotonic() - start > timeout:
                raise CheckFailed(f"lab guest still running after {timeout} s, killed; last console line: "
                                  f"'{_tail(console_log)}' (full log: {console_log}); raise [lab] timeout if the "
                                  "machine is slow")
    finally:
        if proc.poll() is None:  # done, timed out, or interrupted (Ctrl-C): never leave a guest behind
            proc.kill()
            out = proc.communicate()[0]
    if proc.returncode != 0 and not done:
        detail = " ".join(out.split())[-300:] or _tail(console_log)
        raise ToolFailed(f"QEMU exited with status {proc.returncode}: {detail}")
    return time.monotonic() - start


def extract_host(host_out: Path, dest: Path, console_log: Path) -> Path:
    """Decode the base64 tar the guest sent on ttyS1 into ``dest`` (replaced as a whole)."""
    try:
        lines = host_out.read_text(errors="replace").replace("\r", "").splitlines()
    except OSError:
        lines = []
    try:
        # Under OVMF the firmware's console also reaches this port: the mark may follow its escape codes.
        first = next(i for i, line in enumerate(lines) if line.endswith(BEGIN_MARK))
        last = lines.index(END_MARK, first)
    except (StopIteration, ValueError):
        raise CheckFailed(f"the lab guest sent no host state (no '{BEGIN_MARK}' on its second serial port); "
                          f"last console line: '{_tail(console_log)}' (full log: {console_log})") from None
    try:
        data = gzip.decompress(base64.b64decode("".join(lines[first + 1:last]), validate=True))
    except (binascii.Error, OSError, EOFError) as exc:
        raise CheckFailed(f"{host_out}: the guest's host state is corrupt ({exc}); re-run the lab") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            # 'data' refuses absolute names and links leaving the folder: the guest is not trusted.
            tar.extractall(tmp, filter="data")
        os.chmod(tmp, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def boot_and_collect(argv: list[str], files: GuestFiles, timeout: int) -> float:
    """run_qemu with the folder's console log and second serial port, then the saved host decoded; seconds."""
    seconds = run_qemu(argv, files.guest_log, files.host_out, timeout)
    extract_host(files.host_out, files.saved, files.guest_log)
    return seconds
