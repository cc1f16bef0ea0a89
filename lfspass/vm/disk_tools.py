"""What the two disk builders share (the image guest's GPT disk, the lab's GRUB boot disk): one runner
for the disk tools (mkfs, mke2fs, debugfs, dumpe2fs, qemu-img, GRUB's) and the EFI system partition."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO

from lfspass.errors import ToolFailed
from lfspass.fsutil import require_tool

GRUB_EFI_MODULES = Path("/usr/lib/grub/x86_64-efi")
# For a tool whose output is parsed: dumpe2fs and debugfs print translated labels in other locales.
C_LOCALE = {"LC_ALL": "C"}


def _text(data: bytes) -> str:
    """Bytes as text mode would read them (newlines made universal)."""
    return data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _run(argv: list[str], what: str, log: IO[str] | None, env: dict[str, str] | None,
         hint: str) -> subprocess.CompletedProcess[bytes]:
    if log is not None:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
    # With a build log, everything the tool says goes there in order; without one, stderr is kept
    # apart so that stdout is only the tool's answer (debugfs cat prints a file's bytes there).
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
                          env={**os.environ, **(env or {})})
    said = _text(proc.stdout if log is not None else proc.stderr or proc.stdout)
    if log is not None:
        log.write(said)
        log.flush()
    if proc.returncode != 0:
        full = " (the disk is full)" if "No space left" in said else ""
        if log is not None:
            last = (said.strip().splitlines() or ["(no output)"])[-1][:200]
            where = f"; full log: {log.name}"
        else:
            last, where = " ".join(said.split())[-300:] or "(no output)", ""
        raise ToolFailed(f"{what} failed{full}: {argv[0]} said: {last}{where}{hint}")
    return proc


def run_tool(argv: list[str], what: str, log: IO[str] | None = None, env: dict[str, str] | None = None,
             hint: str = "") -> str:
    """Run one tool, its output appended to ``log`` when given; its stdout, or ToolFailed naming its last words."""
    return _text(_run(argv, what, log, env, hint).stdout)


def tool_bytes(argv: list[str], what: str, env: dict[str, str] | None = None) -> bytes:
    """run_tool for an answer that is a file's bytes, not text."""
    return _run(argv, what, None, env, "").stdout


def require_grub_efi() -> None:
    """GRUB's x86_64-efi modules, which grub-mkimage and grub-mkstandalone build an EFI binary from."""
    if not (GRUB_EFI_MODULES / "linux.mod").is_file():
        raise ToolFailed("GRUB's x86_64-efi modules are missing: apt-get install grub-efi-amd64-bin")


def make_esp(out: Path, efi: Path, kib: int, fat_options: list[str], log: IO[str] | None = None,
             env: dict[str, str] | None = None) -> Path:
    """A FAT image of ``kib`` KiB holding ``efi`` as EFI/BOOT/BOOTX64.EFI, the path UEFI boots without a boot entry.

    ``fat_options`` go to mkfs.vfat (the image guest fixes its volume id and clock there); mtools
    copies the file in without mounting anything.
    """
    mkfs = require_tool("mkfs.vfat", "dosfstools")
    mmd, mcopy = require_tool("mmd", "mtools"), require_tool("mcopy", "mtools")
    out.unlink(missing_ok=True)
    run_tool([mkfs, *fat_options, "-C", str(out), str(kib)], "mkfs.vfat", log)
    mtools = {**(env or {}), "MTOOLS_SKIP_CHECK": "1"}
    run_tool([mmd, "-i", str(out), "::/EFI", "::/EFI/BOOT"], "mmd", log, mtools)
    run_tool([mcopy, "-i", str(out), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], "mcopy", log, mtools)
    return out
