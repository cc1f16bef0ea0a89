"""The lfspass GRUB entries as the lab sees them: the newest entry's ``linux`` line (what a ``-kernel``
boot runs) and, after a boot through GRUB, which entry GRUB chose (its ``BOOT_IMAGE=``)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from lfspass.boot.blockfile import read_block
from lfspass.boot.grub import parse_entries
from lfspass.errors import InputError
from lfspass.recipe import Recipe

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
        raise InputError(f"{cfg}: no lfspass block (### BEGIN lfspass); run `doit grub` first")
    in_entry = False
    for n, line in enumerate(body.splitlines(), start=1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"{cfg}: lfspass block line {n}: {exc}; re-run `doit grub`") from None
        if words[:1] == ["menuentry"]:
            in_entry = True
        elif in_entry and words[:1] == ["linux"] and len(words) >= 2:
            return GrubEntry(words[1], words[2:])
    raise InputError(f"{cfg}: the lfspass block has no menuentry with a `linux` line; re-run `doit grub`")


def lab_cmdline(params: list[str]) -> list[str]:
    """The entry's parameters for an initramfs boot: no root= / ro, a serial console, panic reboots."""
    out = [p for p in params if p.split("=", 1)[0] not in ROOT_ONLY]
    if not any(p.startswith("console=ttyS0") for p in out):
        out.append("console=ttyS0")
    # A guest panic then ends QEMU at once (-no-reboot) instead of waiting for the timeout.
    if not any(p.startswith("panic=") for p in out):
        out.append("panic=-1")
    return out


def kernel_cmdline(console_log: Path) -> str | None:
    """The command line the booted kernel printed (GRUB puts BOOT_IMAGE= first)."""
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"Command line: (.*)", text)
    return m.group(1).strip() if m else None


def entry_booted(recipe: Recipe, cmdline: str | None) -> dict:
    """{id, title, kernel} of the lfspass entry whose kernel GRUB booted (BOOT_IMAGE=), or kernel only."""
    image = next((w.split("=", 1)[1] for w in (cmdline or "").split() if w.startswith("BOOT_IMAGE=")), None)
    for e in parse_entries(read_block(recipe.root / recipe.boot.grub_cfg)):
        if image and e.kernel == image:
            return {"id": e.id, "title": e.title, "kernel": image}
    return {"id": None, "title": None, "kernel": image}
