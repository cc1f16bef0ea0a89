"""The boot-once lab's initramfs: the lab image plus the root's ``/etc/rc.d`` (the lfspass-confirm
script and its rc links, as the grub stage wrote them) and a stand-in for the lfspass the script
runs.  The busybox guest has no Python: the stand-in hands the script's command line to the lab
host in the saved host state, and the host runs it against that state before the next boot
(docs/explanation/lab.md#the-boot-once-scenario)."""
from __future__ import annotations

import gzip
from pathlib import Path

from lfspass.boot.autoconfirm import lfspass_command
from lfspass.diskspace import ensure_room
from lfspass.errors import InputError
from lfspass.fsutil import write_atomic
from lfspass.lab.initramfs import LAB_ADVICE, lab_archive, source_date_epoch

ARGV = "lfspass-at-boot/argv"   # below the saved host: the stand-in's command line, one word a line
STAND_IN = f"""#!/bin/sh
# The boot-once lab's stand-in for lfspass (the busybox guest has no Python): the command line
# goes to the lab host with the saved host state; the host runs it before the next boot.
mkdir -p /save/{ARGV.rsplit("/", 1)[0]}
for word in "$@"; do printf '%s\\n' "$word"; done > /save/{ARGV}
echo "lfspass-lab: the boot script runs: lfspass $*"
"""


def build_confirm_image(root: Path, release: str, out: Path) -> bool:
    """Write the gzip'd image to ``out`` (only when its bytes change); True when it changed."""
    arc = lab_archive(root, release)
    rc = root / "etc/rc.d"
    if not (rc / "init.d/lfspass-confirm").is_file():
        raise InputError(f"{rc / 'init.d/lfspass-confirm'} missing: the boot-once lab needs a sysvinit recipe "
                         "and `doit grub` (it writes the boot script)")
    arc.add_tree(rc, "etc/rc.d")
    # At the path the script names, so the script runs unchanged.
    arc.add_file(lfspass_command()[0].lstrip("/"), STAND_IN.encode(), 0o755)
    blob = gzip.compress(arc.newc(source_date_epoch()), compresslevel=6, mtime=0)
    ensure_room(out.parent, len(blob), f"lab: the boot-once initramfs {out}", InputError, LAB_ADVICE)
    return write_atomic(out, blob)


def at_boot_argv(saved: Path) -> list[str] | None:
    """The lfspass arguments the boot script ran in the guest (without a leading ``-m lfspass``), or None."""
    try:
        words = (saved / ARGV).read_text().splitlines()
    except OSError:
        return None
    return words[2:] if words[:2] == ["-m", "lfspass"] else words
