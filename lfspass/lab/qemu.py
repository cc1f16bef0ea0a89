"""Boot an installed kernel in QEMU (q35, emulated VT-d, `edu`) and collect the host state it saves."""
from __future__ import annotations

import base64
import binascii
import gzip
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lfspass.boot.blockfile import read_block
from lfspass.errors import LfspassError
from lfspass.fsutil import require_tool

BEGIN_MARK = "----- BEGIN lfspass-lab host -----"
END_MARK = "----- END lfspass-lab host -----"
# Parameters that only mean something when the kernel mounts a real root filesystem.
ROOT_ONLY = ("root", "ro", "rw", "rootfstype", "rootflags", "rootwait", "rootdelay", "init", "resume")


@dataclass
class GrubEntry:
    """The ``linux`` line of the newest lfspass menuentry."""

    kernel: str          # /boot/vmlinuz-6.1.192-lfs-12.2, as GRUB sees it
    params: list[str]    # everything after the kernel path


def grub_entry(cfg: Path) -> GrubEntry:
    """Parse the first (newest) menuentry of grub.cfg's lfspass block."""
    body = read_block(cfg)
    if body is None:
        raise LfspassError(f"{cfg}: no lfspass block (### BEGIN lfspass); run `doit grub` first")
    in_entry = False
    for n, line in enumerate(body.splitlines(), start=1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise LfspassError(f"{cfg}: lfspass block line {n}: {exc}; re-run `doit grub`") from None
        if words[:1] == ["menuentry"]:
            in_entry = True
        elif in_entry and words[:1] == ["linux"] and len(words) >= 2:
            return GrubEntry(words[1], words[2:])
    raise LfspassError(f"{cfg}: the lfspass block has no menuentry with a `linux` line; re-run `doit grub`")


def lab_cmdline(params: list[str]) -> list[str]:
    """The entry's parameters for an initramfs boot: no root= / ro, a serial console, panic reboots."""
    out = [p for p in params if p.split("=", 1)[0] not in ROOT_ONLY]
    if not any(p.startswith("console=ttyS0") for p in out):
        out.append("console=ttyS0")
    # A guest panic then ends QEMU at once (-no-reboot) instead of waiting for the timeout.
    if not any(p.startswith("panic=") for p in out):
        out.append("panic=-1")
    return out


def qemu_argv(kernel: Path, initrd: Path, cmdline: list[str], console_log: Path, host_out: Path,
              iommu: bool = True, memory: str = "256M", accel: str = "tcg") -> list[str]:
    """The QEMU command: FIELD-NOTES §8's lab machine, two serial ports to files, no network."""
    # TCG by default: a /dev/kvm that exists can still hang a guest (nested setups), and
    # the lab's timings are quoted for TCG.
    argv = [require_tool("qemu-system-x86_64", "qemu-system-x86"),
            "-machine", "q35,kernel-irqchip=split", "-accel", accel, "-m", memory,
            "-nodefaults", "-display", "none", "-no-reboot",
            # ttyS0: kernel console and /init's messages; ttyS1: only the saved host.
            "-serial", f"file:{console_log}", "-serial", f"file:{host_out}"]
    if iommu:
        argv += ["-device", "intel-iommu,intremap=on"]  # before the PCI devices it translates for
    argv += ["-device", "edu", "-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(cmdline)]
    return argv


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def boot(argv: list[str], console_log: Path, host_out: Path, timeout: int) -> float:
    """Run QEMU until the guest powers off; seconds taken.  Timeout or a QEMU error -> LfspassError."""
    for path in (console_log, host_out):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = None
    finally:
        if proc.poll() is None:  # timed out, or interrupted (Ctrl-C): never leave a guest behind
            proc.kill()
            proc.communicate()
    if out is None:
        raise LfspassError(f"lab guest still running after {timeout} s, killed; last console line: "
                           f"'{_tail(console_log)}' (full log: {console_log}); raise [lab] timeout if the machine is slow")
    if proc.returncode != 0:
        detail = " ".join(out.split())[-300:] or _tail(console_log)
        raise LfspassError(f"QEMU exited with status {proc.returncode}: {detail}")
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
        raise LfspassError(f"the lab guest sent no host state (no '{BEGIN_MARK}' on its second serial port); "
                           f"last console line: '{_tail(console_log)}' (full log: {console_log})") from None
    try:
        data = gzip.decompress(base64.b64decode("".join(lines[first + 1:last]), validate=True))
    except (binascii.Error, OSError, EOFError) as exc:
        raise LfspassError(f"{host_out}: the guest's host state is corrupt ({exc}); re-run the lab") from None
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
