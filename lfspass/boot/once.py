"""Boot a new kernel once, then make it the default only after its checks pass.

`boot try` sets GRUB's ``next_entry`` to the newest lfspass entry (GRUB clears it as it
boots, so the next power cycle is back on ``saved_entry``); `boot confirm` runs doctor's
checks on the booted host and only then sets ``saved_entry``.  What was tried and the last
confirm result are kept in the root's state folder (``var/lib/lfspass/boot.json``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from lfspass.boot.blockfile import read_block
from lfspass.boot.env import env_path, env_unwritable, read_env, set_env
from lfspass.boot.grub import Entry, entry_id, parse_entries
from lfspass.errors import InputError
from lfspass.fsutil import write_atomic
from lfspass.journal import state_dir
from lfspass.model import Check, Status
from lfspass.plan import kernel_paths
from lfspass.recipe import Recipe


def state_path(recipe: Recipe) -> Path:
    return state_dir(recipe.root) / "boot.json"


def read_state(recipe: Recipe) -> dict:
    try:
        return json.loads(state_path(recipe).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(recipe: Recipe, state: dict) -> None:
    write_atomic(state_path(recipe), json.dumps(state, indent=1, sort_keys=True) + "\n")


def entries(recipe: Recipe) -> list[Entry]:
    cfg = recipe.root / recipe.boot.grub_cfg
    found = parse_entries(read_block(cfg))
    if not found:
        raise InputError(f"{cfg}: no lfspass menuentry; run `doit grub` first")
    return found


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def boot_try(recipe: Recipe, release: str, mountinfo: str | None = None) -> dict:
    """Make the recipe's newest kernel the next boot only; the default stays the last good entry."""
    env_file = env_path(recipe)
    why = env_unwritable(env_file, mountinfo)
    if why is not None:
        raise InputError(
            f"{why}: GRUB cannot write its environment block there, so next_entry would never be cleared "
            f"and the tried kernel would boot every time; not changed. Put /boot on a plain ext2/3/4 or "
            f"FAT partition, or choose the kernel at the console")
    found = entries(recipe)
    vmlinuz = kernel_paths(recipe, release).vmlinuz
    tried = next((e for e in found if recipe.root / e.kernel.lstrip("/") == vmlinuz), None)
    if tried is None or not vmlinuz.is_file():
        raise InputError(f"{recipe.root / recipe.boot.grub_cfg}: no lfspass entry boots {vmlinuz.name}; "
                         "run `doit kernel grub` first")
    env = read_env(env_file)
    ids = [e.id for e in found]
    default = env.get("saved_entry") or read_state(recipe).get("confirmed", {}).get("id")
    if default not in ids or default == tried.id:
        # No good entry recorded: the fallback is the next lfspass entry (the kept build or an older kernel).
        default = next((i for i in ids if i != tried.id), None)
    if default is None:
        print(f"warning: {tried.id} is the only lfspass entry: no other kernel to come back to except the "
              "grub.cfg entries outside the lfspass block (choose one at the console)", file=sys.stderr)
    new_env = set_env(recipe, next_entry=tried.id, saved_entry=default)
    state = read_state(recipe)
    state["tried"] = {"id": tried.id, "title": tried.title, "release": release, "kernel": tried.kernel, "at": _now()}
    _save_state(recipe, state)
    return {"tried": tried.id, "default": default, "env": new_env, "grubenv": str(env_file)}


def _boot_image(cmdline: str | None) -> str | None:
    for word in (cmdline or "").split():
        if word.startswith("BOOT_IMAGE="):
            return word.split("=", 1)[1].split(")")[-1]  # GRUB may write (hd0,gpt2)/boot/...
    return None


def booted_entry(recipe: Recipe, cmdline: str | None) -> Entry | None:
    """The lfspass entry whose kernel GRUB booted (from BOOT_IMAGE= on the kernel command line)."""
    image = _boot_image(cmdline)
    for e in parse_entries(read_block(recipe.root / recipe.boot.grub_cfg)):
        if image is not None and e.kernel == image:
            return e
    return None


def kernel_check(recipe: Recipe, tried: dict, host) -> Check:
    """The booted kernel is the one `boot try` chose (release, and GRUB's BOOT_IMAGE when given)."""
    title = "booted kernel is the tried one"
    image = _boot_image(host.cmdline)
    if host.release != tried["release"]:
        return Check("boot-kernel", Status.FAIL, title, f"the host runs {host.release}, not the tried {tried['release']} "
                     f"({tried['id']}): GRUB booted another entry (or it panicked and came back)",
                     "look at the console log; fix the kernel, then `lfspass boot try` again")
    if image is not None and image != tried["kernel"]:
        return Check("boot-kernel", Status.FAIL, title, f"GRUB booted {image}, not the tried {tried['kernel']}",
                     "the tried kernel did not come up; the default entry booted instead")
    return Check("boot-kernel", Status.PASS, title, f"{host.release} from {image or tried['kernel']}")


def boot_confirm(recipe: Recipe, host_root: str | os.PathLike) -> tuple[bool, list[Check]]:
    """Run doctor's checks on the booted host; all passing makes the tried entry the saved default."""
    from lfspass.doctor.run import run_doctor
    from lfspass.host.read import Host
    from lfspass.plugins import get_plugin_manager

    state = read_state(recipe)
    tried = state.get("tried")
    if not tried:
        raise InputError(f"{state_path(recipe)}: nothing was tried; run `lfspass boot try` and boot it first")
    host = Host(host_root)
    checks = [kernel_check(recipe, tried, host)] + run_doctor(host, recipe, get_plugin_manager())
    ok = not any(c.status == Status.FAIL for c in checks)
    ids = [e.id for e in entries(recipe)]
    if ok and tried["id"] not in ids:
        ok = False
        checks.append(Check("boot-entry", Status.FAIL, "tried entry still in grub.cfg",
                            f"{tried['id']} is no longer in grub.cfg", "run `doit grub` and `lfspass boot try` again"))
    result = {"id": tried["id"], "release": tried["release"], "ok": ok, "at": _now(), "host_root": str(host_root),
              "failed": [f"{c.id}: {c.detail}" for c in checks if c.status == Status.FAIL]}
    if ok:
        set_env(recipe, saved_entry=tried["id"])
        state["confirmed"] = {"id": tried["id"], "release": tried["release"], "at": result["at"]}
    state["last_confirm"] = result
    _save_state(recipe, state)
    return ok, checks


def boot_status(recipe: Recipe, running: str | None) -> dict:
    env = read_env(env_path(recipe))
    found = {e.id: e for e in parse_entries(read_block(recipe.root / recipe.boot.grub_cfg))}

    def describe(eid: str | None) -> dict | None:
        if not eid:
            return None
        e = found.get(eid)
        return {"id": eid, "title": e.title if e else None, "kernel": e.kernel if e else None,
                "in_grub_cfg": e is not None}

    state = read_state(recipe)
    return {"grubenv": str(env_path(recipe)), "default": describe(env.get("saved_entry")),
            "next_boot": describe(env.get("next_entry")), "running": running,
            "tried": state.get("tried"), "last_confirm": state.get("last_confirm"),
            "entries": [{"id": e.id, "title": e.title, "kernel": e.kernel} for e in found.values()]}


__all__ = ["boot_try", "boot_confirm", "boot_status", "booted_entry", "entry_id"]
