"""The GRUB menuentry for the recipe's kernel, kept as a marked block in the user's grub.cfg."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from lfspass.boot.blockfile import read_block, write_block
from lfspass.errors import LfspassError, RecipeError
from lfspass.fsutil import require_tool
from lfspass.plan import HostPlan
from lfspass.render import render

ENTRY_MARK = "# lfspass kernel: "
# A new grub.cfg gets the LFS book's preamble; an existing one keeps the user's.
NEW_FILE_HEADER = "# GRUB configuration (LFS book, section 10.4)\nset default=0\nset timeout=5\n\n"


def entry_cmdline(plan: HostPlan) -> str:
    boot = plan.recipe.boot
    if boot.root_partuuid:
        root = f"root=PARTUUID={boot.root_partuuid}"
    elif boot.root_device:
        root = f"root={boot.root_device}"
    else:
        raise RecipeError(f"{plan.recipe.path}: [boot] needs root_partuuid (blkid -s PARTUUID) or root_device "
                          "for the kernel's root= parameter")
    return " ".join([root, "ro", *plan.cmdline])


def render_entry(plan: HostPlan) -> str:
    """One menuentry, from the built-in template or the recipe's ``entry_template``."""
    boot = plan.recipe.boot
    release_name = f"{plan.kernel.release}-lfs-{plan.recipe.kernel.lfs_version}"
    template = boot.entry_template or "grub-entry.j2"
    text = render(template, release=plan.kernel.release, vmlinuz=plan.vmlinuz,
                  title=boot.title or f"GNU/Linux, Linux {release_name}", fs_uuid=boot.fs_uuid,
                  cmdline=entry_cmdline(plan), microcode=boot.microcode)
    if not text.startswith(ENTRY_MARK):
        text = f"{ENTRY_MARK}{plan.kernel.release}\n{text}"
    return text if text.endswith("\n") else text + "\n"


def split_entries(body: str | None) -> dict[str, str]:
    """release -> entry text, in the block's order."""
    entries: dict[str, str] = {}
    current = None
    for line in (body or "").splitlines(keepends=True):
        if line.startswith(ENTRY_MARK):
            current = line[len(ENTRY_MARK):].strip()
            entries[current] = ""
        if current is not None:
            entries[current] += line
    return entries


def block_body(plan: HostPlan, old_body: str | None) -> str:
    """The new entry first (GRUB's default 0 in a new file), then earlier kernels as fallbacks."""
    entries = {plan.kernel.release: render_entry(plan)}
    for release, text in split_entries(old_body).items():
        entries.setdefault(release, text if text.endswith("\n") else text + "\n")
    return "".join(entries.values())


def check_script(text: str) -> None:
    """Run the real ``grub-script-check`` on the whole file before it is written."""
    tool = require_tool("grub-script-check", "grub-common")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as tmp:
        tmp.write(text)
        tmp.flush()
        proc = subprocess.run([tool, tmp.name], capture_output=True, text=True)
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())
        raise LfspassError(f"generated grub.cfg fails grub-script-check ({detail}); nothing was written; "
                           "check [boot] values and your entry_template")


def grub_cfg_path(plan: HostPlan) -> Path:
    return plan.recipe.root / plan.recipe.boot.grub_cfg


def write_grub(plan: HostPlan) -> bool:
    """Update the lfspass block of grub.cfg; True when the file changed."""
    cfg = grub_cfg_path(plan)
    body = block_body(plan, read_block(cfg))
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    note = f"generated from {plan.recipe.path.name}; edit the recipe, not this block"
    return write_block(cfg, body, note, header=NEW_FILE_HEADER, check=check_script)
