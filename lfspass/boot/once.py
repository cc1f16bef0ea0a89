"""Boot a new kernel for ``[boot] tries`` boots, then make it the default only after its checks pass.

`boot try` sets GRUB's ``next_entry`` to the newest lfspass entry and ``lfspass_retries`` to
tries - 1 (GRUB clears next_entry as it boots, arming it again while retries are left, so the
power cycle after the last try is back on ``saved_entry``); `boot confirm` (typed, or run at
boot by the lfspass-confirm script) runs doctor's checks on the booted host and only then sets
``saved_entry``.  A kernel that used its tries without a confirm is marked bad: `boot try`
refuses that build until it is rebuilt.  What was tried, the last confirm result and the bad
builds are kept in the root's state folder (``var/lib/lfspass/boot.json``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from lfspass.boot.blockfile import read_block
from lfspass.boot.env import env_path, env_unwritable, read_env, set_env
from lfspass.boot.grub import KEPT, RETRIES_VAR, Entry, entry_id, parse_entries
from lfspass.errors import InputError
from lfspass.fsutil import sha256_file, write_atomic
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


def tries_left(env: dict[str, str], tried: dict | None) -> int:
    """Boots GRUB still gives the tried entry: next_entry armed for it, plus the retries after that one."""
    if not tried or env.get("next_entry") != tried["id"]:
        return 0
    retries = env.get(RETRIES_VAR, "")
    return 1 + (int(retries) if retries.isdigit() else 0)


def _build_name(name: str) -> str:
    return name[:-len(KEPT)] if name.endswith(KEPT) else name


def bad_record(state: dict, vmlinuz: Path) -> dict | None:
    """The bad mark of this build (same file name and bytes), or None."""
    if not vmlinuz.is_file():
        return None
    name, digest = _build_name(vmlinuz.name), None
    for b in state.get("bad", []):
        if b.get("vmlinuz") == name:
            digest = digest or sha256_file(vmlinuz)
            if b.get("sha256") == digest:
                return b
    return None


def boot_try(recipe: Recipe, release: str, mountinfo: str | None = None) -> dict:
    """Make the recipe's newest kernel the next boot for ``[boot] tries`` boots; the default stays the
    last good entry."""
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
    state = read_state(recipe)
    bad = bad_record(state, vmlinuz)
    if bad is not None:
        raise InputError(f"{vmlinuz}: this build ({tried.id}) used its {bad['tries']} "
                         f"{'try' if bad['tries'] == 1 else 'tries'} without a confirm ({bad['why']}) and is marked "
                         f"bad in {state_path(recipe)}; not tried again: fix and rebuild it (`doit kernel grub`), "
                         "then `lfspass boot try`")
    tries = recipe.boot.tries
    if tries > 1 and RETRIES_VAR not in (read_block(recipe.root / recipe.boot.grub_cfg) or ""):
        raise InputError(f"{recipe.root / recipe.boot.grub_cfg}: its lfspass block predates [boot] tries (GRUB "
                         f"would boot {tried.id} once, not {tries} times); not changed: run `doit grub` first")
    env = read_env(env_file)
    ids = [e.id for e in found]
    default = env.get("saved_entry") or state.get("confirmed", {}).get("id")
    if default not in ids or default == tried.id:
        # No good entry recorded: the fallback is the next lfspass entry (the kept build or an older kernel).
        default = next((i for i in ids if i != tried.id), None)
    if default is None:
        print(f"warning: {tried.id} is the only lfspass entry: no other kernel to come back to except the "
              "grub.cfg entries outside the lfspass block (choose one at the console)", file=sys.stderr)
    new_env = set_env(recipe, next_entry=tried.id, saved_entry=default,
                      **{RETRIES_VAR: str(tries - 1) if tries > 1 else None})
    state["tried"] = {"id": tried.id, "title": tried.title, "release": release, "kernel": tried.kernel, "at": _now(),
                      "tries": tries, "vmlinuz": _build_name(vmlinuz.name), "sha256": sha256_file(vmlinuz),
                      "outcome": "pending"}
    _save_state(recipe, state)
    return {"tried": tried.id, "default": default, "tries": tries, "env": new_env, "grubenv": str(env_file)}


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


def tried_outcome(state: dict) -> str:
    """pending, confirmed or bad (a state file from before tries: confirmed when its confirm named it)."""
    tried = state.get("tried") or {}
    if "outcome" in tried:
        return tried["outcome"]
    return "confirmed" if tried and state.get("confirmed", {}).get("id") == tried.get("id") else "pending"


def _mark_bad(state: dict, tried: dict, why: str) -> dict:
    """Record the tried build as bad (it used its tries without a confirm); `boot try` refuses it."""
    tried["outcome"] = "bad"
    record = {k: tried.get(k) for k in ("id", "release", "kernel", "vmlinuz", "sha256")}
    record.update(tries=tried.get("tries", 1), at=_now(), why=why)
    state["bad"] = [b for b in state.get("bad", []) if b.get("id") != tried["id"]] + [record]
    return record


def boot_confirm(recipe: Recipe, host_root: str | os.PathLike, at_boot: bool = False) -> dict:
    """Run doctor's checks on the booted host; all passing makes the tried entry the saved default.

    Returns ``ok``, ``outcome`` (confirmed, failed: tries are left, bad: it used them, waiting:
    another kernel runs while the tried one has tries left, nothing: at boot with nothing to
    confirm), ``message`` and ``checks``.  ``at_boot`` is the boot script's way: nothing tried (or
    already settled) is not an error, and another kernel running while tries are left is not one."""
    from lfspass.doctor.run import run_doctor
    from lfspass.host.read import Host
    from lfspass.plugins import get_plugin_manager

    state = read_state(recipe)
    tried = state.get("tried")
    outcome = tried_outcome(state)
    if at_boot and (not tried or outcome != "pending"):
        what = f"{tried['id']} is already {outcome}" if tried else "no kernel was tried"
        return {"ok": True, "outcome": "nothing", "message": f"nothing to confirm: {what}", "checks": []}
    if not tried:
        raise InputError(f"{state_path(recipe)}: nothing was tried; run `lfspass boot try` and boot it first")
    if outcome == "bad":
        raise InputError(f"{state_path(recipe)}: {tried['id']} used its tries and is marked bad; nothing to "
                         "confirm: fix and rebuild the kernel (`doit kernel grub`), then `lfspass boot try`")
    host = Host(host_root)
    env = read_env(env_path(recipe))
    left = tries_left(env, tried)
    first = kernel_check(recipe, tried, host)
    if at_boot and first.status == Status.FAIL and left > 0:
        # Another entry booted (chosen at the console) while GRUB still owes the tried one a boot.
        message = (f"{host.release} is running, not the tried {tried['id']}: GRUB boots that one at the next boot "
                   f"({left} {'try' if left == 1 else 'tries'} left)")
        return {"ok": True, "outcome": "waiting", "message": message, "checks": [first]}
    checks = [first] + run_doctor(host, recipe, get_plugin_manager())
    ok = not any(c.status == Status.FAIL for c in checks)
    ids = [e.id for e in entries(recipe)]
    if ok and tried["id"] not in ids:
        ok = False
        checks.append(Check("boot-entry", Status.FAIL, "tried entry still in grub.cfg",
                            f"{tried['id']} is no longer in grub.cfg", "run `doit grub` and `lfspass boot try` again"))
    failed = [f"{c.id}: {c.detail}" for c in checks if c.status == Status.FAIL]
    result = {"id": tried["id"], "release": tried["release"], "ok": ok, "at": _now(), "host_root": str(host_root),
              "failed": failed, "tries_left": left, "at_boot": at_boot}
    if ok:
        # The confirmed entry is the default; GRUB owes it no more tries.
        set_env(recipe, saved_entry=tried["id"], **{RETRIES_VAR: None},
                **({"next_entry": None} if env.get("next_entry") == tried["id"] else {}))
        tried["outcome"] = "confirmed"
        state["confirmed"] = {"id": tried["id"], "release": tried["release"], "at": result["at"]}
        outcome, message = "confirmed", f"confirmed: {tried['id']} is now the default (saved_entry)"
    elif left == 0 and outcome == "pending":
        tries = tried.get("tries", 1)
        _mark_bad(state, tried, "; ".join(failed))
        outcome = "bad"
        message = (f"not confirmed, the default entry is unchanged: {'; '.join(failed)}; {tried['id']} used its "
                   f"{tries} {'try' if tries == 1 else 'tries'} and is marked bad (`boot try` refuses it until "
                   "it is rebuilt)")
    else:
        outcome = "failed"
        message = f"not confirmed, the default entry is unchanged: {'; '.join(failed)}" + (
            f"; GRUB boots {tried['id']} at the next boot ({left} {'try' if left == 1 else 'tries'} left)" if left else "")
    result["outcome"] = outcome
    state["last_confirm"] = result
    _save_state(recipe, state)
    return {"ok": ok, "outcome": outcome, "message": message, "checks": checks}


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
    tried = state.get("tried")
    return {"grubenv": str(env_path(recipe)), "default": describe(env.get("saved_entry")),
            "next_boot": describe(env.get("next_entry")), "running": running,
            "tried": tried, "tried_outcome": tried_outcome(state) if tried else None,
            "tries_left": tries_left(env, tried), "last_confirm": state.get("last_confirm"),
            "bad": state.get("bad", []),
            "entries": [{"id": e.id, "title": e.title, "kernel": e.kernel} for e in found.values()]}


__all__ = ["boot_try", "boot_confirm", "boot_status", "booted_entry", "entry_id"]
