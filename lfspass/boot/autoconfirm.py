"""Automatic confirm: the boot script that runs `lfspass boot confirm --at-boot` once the host is up.

The LFS sysvinit book gets ``/etc/rc.d/init.d/lfspass-confirm`` with ``S99`` links in the
multi-user runlevels (3, 4, 5), as the LFS bootscripts name theirs; the systemd book gets
``lfspass-confirm.service`` (oneshot, after and wanted by multi-user.target).  Written below the
recipe's root by the ``grub`` task and journaled, so `lfspass rollback` removes them.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from lfspass import journal
from lfspass.errors import RecipeError
from lfspass.recipe import Recipe
from lfspass.render import render

SYSV_SCRIPT = "etc/rc.d/init.d/lfspass-confirm"
SYSV_LINKS = tuple(f"etc/rc.d/rc{level}.d/S99lfspass-confirm" for level in (3, 4, 5))
SYSTEMD_UNIT = "etc/systemd/system/lfspass-confirm.service"
SYSTEMD_WANTS = "etc/systemd/system/multi-user.target.wants/lfspass-confirm.service"


def lfspass_command() -> list[str]:
    """How the booted host starts this lfspass: the ``lfspass`` beside this Python (a venv), else ``-m``."""
    beside = Path(sys.executable).with_name("lfspass")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "lfspass"]


def _no_controls(words: list[str], recipe: Recipe) -> None:
    for w in words:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in w):
            raise RecipeError(f"{recipe.path}: {w!r} holds a control character; the boot script runs it as one "
                              "line: move the recipe or lfspass to a plain path")


def _systemd_word(word: str) -> str:
    """One ExecStart word: shell-style quoting (systemd reads it), ``%`` and ``$`` doubled."""
    return shlex.quote(word).replace("%", "%%").replace("$", "$$")


def paths(recipe: Recipe) -> list[Path]:
    """What the boot stage writes for the recipe's init (the script or unit first, then its links)."""
    rels = [SYSV_SCRIPT, *SYSV_LINKS] if recipe.host.init == "sysvinit" else [SYSTEMD_UNIT, SYSTEMD_WANTS]
    return [recipe.root / r for r in rels]


def render_script(recipe: Recipe, command: list[str] | None = None) -> str:
    words = [*(command or lfspass_command()), str(Path(os.path.abspath(recipe.path)))]
    _no_controls(words, recipe)
    *cmd, path = words
    if recipe.host.init == "sysvinit":
        return render("lfspass-confirm.j2", recipe_name=recipe.path.name, command=shlex.join(cmd),
                      recipe=shlex.quote(path))
    grubenv = "/" + str(Path(recipe.boot.grub_cfg).parent / "grubenv")
    return render("lfspass-confirm.service.j2", recipe_name=recipe.path.name, grubenv=_systemd_word(grubenv),
                  command=" ".join(_systemd_word(w) for w in cmd), recipe=_systemd_word(path))


def write_autoconfirm(recipe: Recipe, command: list[str] | None = None) -> list[Path]:
    """Write the script (or unit) and its links under the root, journaled; returns the paths that changed."""
    root = recipe.root
    main, *links = paths(recipe)
    changed = []
    if journal.write_atomic(root, main, render_script(recipe, command), 0o755 if recipe.host.init == "sysvinit" else 0o644):
        changed.append(main)
    for link in links:
        target = "../init.d/lfspass-confirm" if recipe.host.init == "sysvinit" else "../lfspass-confirm.service"
        if journal.write_link(root, link, target):
            changed.append(link)
    return changed
