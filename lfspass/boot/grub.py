"""The GRUB menuentries for the recipe's kernels, kept as a marked block in the user's grub.cfg.

The block starts with GRUB's environment logic (what grub-mkconfig puts in its header,
which an LFS grub.cfg lacks; docs/howto/boot-once-rollback.md): load ``grubenv``, boot
``next_entry`` once, else the ``saved_entry`` default.  Every entry has an ``--id`` made from its kernel
file's name and content, so an id keeps naming the same build even after a reinstall
moves that build to its ``.old`` name.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lfspass.boot.blockfile import read_block, write_block
from lfspass.errors import InputError, RecipeError
from lfspass.fsutil import require_tool, sha256_file
from lfspass.host.placement import hugepage_params
from lfspass.plan import HostPlan
from lfspass.render import render

ENTRY_MARK = "# lfspass kernel: "
# A new grub.cfg gets the LFS book's preamble; an existing one keeps the user's.
NEW_FILE_HEADER = "# GRUB configuration (LFS book, section 10.4)\nset default=0\nset timeout=5\n\n"
KEPT = ".old"
PANIC_S = 10  # a kernel that panics reboots, into the default, after this many seconds
RETRIES_VAR = "lfspass_retries"   # grubenv: boots of next_entry still to come after this one ([boot] tries - 1)
MAX_TRIES = 9


def _retry_chain() -> str:
    """GRUB script has no arithmetic: one test per count re-arms next_entry and lowers the count."""
    lines = []
    for left in range(1, MAX_TRIES):
        lines += [f'  {"if" if left == 1 else "elif"} [ "${{{RETRIES_VAR}}}" = {left} ]; then',
                  '    set next_entry="${default}"',
                  f"    set {RETRIES_VAR}={left - 1}",
                  f"    save_env {RETRIES_VAR}"]
    return "\n".join(lines) + "\n  fi\n"


ENV_LOGIC = f"""\
# GRUB environment (lfspass boot try / confirm): boot next_entry, else saved_entry; next_entry
# is armed again while {RETRIES_VAR} (tries left after this boot, [boot] tries) is above 0.
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${{next_entry}}" ]; then
  set default="${{next_entry}}"
  set next_entry=
{_retry_chain()}  save_env next_entry
elif [ "${{saved_entry}}" ]; then
  set default="${{saved_entry}}"
fi
"""


# A word GRUB's lexer reads back unchanged without quotes (the same set shlex.quote leaves bare).
_PLAIN_WORD = re.compile(r"[\w@%+=:,./-]+", re.ASCII)


def _no_controls(text: str, where: str) -> None:
    bad = next((c for c in text if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise RecipeError(f"{where} = {text!r}: holds the control character {bad!r}; a GRUB entry is one line "
                          "of text: remove it from the recipe")


def grub_word(text: str, where: str) -> str:
    """``text`` as one GRUB word that its lexer reads back literally: bare when plain, else in single
    quotes (GRUB expands nothing inside them; a quote itself is written ``'\\''``)."""
    _no_controls(text, where)
    if _PLAIN_WORD.fullmatch(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def grub_quoted_text(text: str, where: str) -> str:
    """``text`` for inside GRUB double quotes (a menu title): ``\\``, ``"`` and ``$`` escaped, as GRUB's
    lexer needs, so a title can neither end its string nor expand a variable."""
    _no_controls(text, where)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def entry_id(vmlinuz: Path) -> str:
    """``lfspass-<rel>-lfs-<ver>-<8 hex>``: the hex follows the file's name (without .old) and bytes."""
    name = vmlinuz.name[:-len(KEPT)] if vmlinuz.name.endswith(KEPT) else vmlinuz.name
    base = "lfspass-" + name.removeprefix("vmlinuz-")
    if not vmlinuz.is_file():
        return base
    return f"{base}-{hashlib.sha256(f'{name}:{sha256_file(vmlinuz)}'.encode()).hexdigest()[:8]}"


def entry_cmdline(plan: HostPlan) -> str:
    boot = plan.recipe.boot
    if boot.root_partuuid:
        root = f"root=PARTUUID={boot.root_partuuid}"
    elif boot.root_device:
        root = f"root={boot.root_device}"
    else:
        raise RecipeError(f"{plan.recipe.path}: [boot] needs root_partuuid (blkid -s PARTUUID) or root_device "
                          "for the kernel's root= parameter")
    # [vms.tuning] hugepages: reserved at boot, on the nodes the VMs' memory is bound to.
    params = [root, "ro", *plan.cmdline, *hugepage_params(plan.recipe)]
    if not any(p.startswith("panic=") for p in params):
        params.append(f"panic={PANIC_S}")  # a tried kernel that panics comes back on the default
    # Each parameter is one GRUB word: a ';', quote or '$' in a recipe value stays text for the kernel.
    return " ".join(grub_word(p, f"{plan.recipe.path}: [boot] cmdline") for p in params)


def _with_id(text: str, eid: str) -> str:
    """Give the first menuentry ``--id eid`` (a recipe's own template may not have one)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.lstrip().startswith("menuentry"):
            bare = re.sub(r"\s--id(=|\s+)\S+", "", line)
            lines[i] = re.sub(r"\s*\{\s*$", f" --id {eid} {{\n", bare, count=1)
            break
    return "".join(lines)


def render_entry(plan: HostPlan, vmlinuz: str | None = None, kept: bool = False) -> str:
    """One menuentry, from the built-in template or the recipe's ``entry_template``."""
    boot = plan.recipe.boot
    vmlinuz = vmlinuz or plan.vmlinuz
    eid = entry_id(plan.recipe.root / "boot" / vmlinuz)
    release_name = f"{plan.kernel.release}-lfs-{plan.recipe.kernel.lfs_version}"
    title = boot.title or f"GNU/Linux, Linux {release_name}"
    if kept:
        title += " (previous build)"
    initrds = " ".join(p for p in (boot.microcode, boot.initrd) if p)
    template = boot.entry_template or "grub-entry.j2"
    title = grub_quoted_text(title, f"{plan.recipe.path}: [boot] title")
    text = render(template, release=plan.kernel.release, vmlinuz=vmlinuz, id=eid, title=title,
                  fs_uuid=boot.fs_uuid, cmdline=entry_cmdline(plan), microcode=boot.microcode,
                  initrd=boot.initrd, initrds=initrds)
    text = "\n".join(l for l in text.splitlines() if not l.startswith(ENTRY_MARK))
    return f"{ENTRY_MARK}{eid}\n" + _with_id(text if text.endswith("\n") else text + "\n", eid)


@dataclass
class Entry:
    id: str
    title: str
    kernel: str          # the linux line's path, as GRUB sees it (/boot/vmlinuz-...)
    params: list[str]
    text: str


def parse_entries(body: str | None) -> list[Entry]:
    """The block's menuentries, in order (id, title, linux line)."""
    chunks: list[str] = []
    for line in (body or "").splitlines(keepends=True):
        if line.startswith(ENTRY_MARK):
            chunks.append("")
        if chunks:
            chunks[-1] += line
    out = []
    for chunk in chunks:
        eid = chunk.splitlines()[0][len(ENTRY_MARK):].strip()
        title, kernel, params = "", "", []
        for line in chunk.splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            if words[:1] == ["menuentry"] and len(words) > 1:
                title = words[1].replace("\\$", "$")   # shlex keeps the backslash GRUB drops before a $ inside "..."
                if "--id" in words[:-1]:
                    eid = words[words.index("--id") + 1]
            elif words[:1] == ["linux"] and len(words) > 1 and not kernel:
                kernel, params = words[1], words[2:]
        out.append(Entry(eid, title, kernel, params, chunk if chunk.endswith("\n") else chunk + "\n"))
    return out


def _carry(root: Path, e: Entry) -> str | None:
    """An earlier entry, still naming the build it was made for (now maybe at its .old name), or None."""
    if not e.kernel.startswith("/boot/"):
        return None
    for cand in (e.kernel, e.kernel + KEPT):
        path = root / cand.lstrip("/")
        if path.is_file() and entry_id(path) == e.id:
            text = e.text
            if cand != e.kernel:
                text = text.replace(f" {e.kernel} ", f" {cand} ", 1)
                if "(previous build)" not in text:
                    text = re.sub(r'(menuentry\s+")((?:[^"\\]|\\.)*)"', r'\1\2 (previous build)"', text, count=1)
            return text
    path = root / e.kernel.lstrip("/")
    if not path.exists() and not Path(str(path) + KEPT).exists() and entry_id(path) == e.id:
        return e.text  # written before its kernel was installed (a recipe without a build): kept as it was
    return None


def block_body(plan: HostPlan, old_body: str | None) -> str:
    """Env logic, the new entry first, its kept previous build, then earlier kernels as fallbacks."""
    root = plan.recipe.root
    entries = {entry_id(root / "boot" / plan.vmlinuz): render_entry(plan)}
    for e in parse_entries(old_body):
        if e.id not in entries:
            text = _carry(root, e)
            if text is not None:
                entries[e.id] = text
    kept = root / "boot" / (plan.vmlinuz + KEPT)
    if kept.is_file() and entry_id(kept) not in entries:
        entries[entry_id(kept)] = render_entry(plan, kept.name, kept=True)
    ids = list(entries)
    fallback = f'set fallback="{ids[1]}"\n' if len(ids) > 1 else ""
    return ENV_LOGIC + fallback + "".join(entries.values())


def check_script(text: str) -> None:
    """Run the real ``grub-script-check`` on the whole file before it is written."""
    tool = require_tool("grub-script-check", "grub-common")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as tmp:
        tmp.write(text)
        tmp.flush()
        proc = subprocess.run([tool, tmp.name], capture_output=True, text=True)
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())
        raise InputError(f"generated grub.cfg fails grub-script-check ({detail}); nothing was written; "
                         "check [boot] values and your entry_template")


def grub_cfg_path(plan: HostPlan) -> Path:
    return plan.recipe.root / plan.recipe.boot.grub_cfg


def write_grub(plan: HostPlan) -> bool:
    """Update the lfspass block of grub.cfg (create grubenv, write the confirm boot script); True when
    grub.cfg changed."""
    from lfspass.boot.autoconfirm import write_autoconfirm
    from lfspass.boot.env import ensure_env

    cfg = grub_cfg_path(plan)
    body = block_body(plan, read_block(cfg))
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    note = f"generated from {plan.recipe.path.name}; edit the recipe, not this block"
    changed = write_block(cfg, body, note, header=NEW_FILE_HEADER, check=check_script, root=plan.recipe.root)
    ensure_env(plan.recipe)
    write_autoconfirm(plan.recipe)   # the boot script that runs `boot confirm --at-boot`
    return changed
