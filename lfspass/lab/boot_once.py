"""The boot-once lab scenario (`doit bootonce`): a good kernel is tried and confirmed by the
lfspass-confirm boot script, no command typed; a second one that fails its checks (the same
build installed as lfs version ``<ver>-broken`` with ``intel_iommu=off`` on its command line, so
no second compile) is tried with ``[boot] tries = 2``, boots twice through GRUB, fails the boot
script's confirm both times and is marked bad; the next boot is the good kernel again, and
`boot try` refuses the bad build; `lfspass rollback` then puts grub.cfg, grubenv, the vfio
files and the boot script back byte for byte.  Runs on a copy of the lab root."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lfspass import journal
from lfspass.errors import CheckFailed
from lfspass.fsutil import write_atomic
from lfspass.recipe import Recipe, load_recipe

BROKEN_PARAM = "intel_iommu=off"   # the tried kernel comes up without its IOMMU: doctor fails it
BROKEN_TRIES = 2
FILES = ("boot/grub/grub.cfg", "boot/grub/grubenv", "etc/modprobe.d/vfio.conf", "etc/rc.d/init.d/lfspass-confirm")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)  # strings and lists of strings: JSON's escapes are TOML's


def recipe_toml(recipe: Recipe, **changes) -> str:
    """The loaded recipe (absolute paths) as TOML, without VMs; ``changes``: {"kernel.lfs_version": ...}."""
    data = {"host": dataclasses.asdict(recipe.host), "kernel": dataclasses.asdict(recipe.kernel),
            "boot": dataclasses.asdict(recipe.boot), "lab": dataclasses.asdict(recipe.lab)}
    for key, value in changes.items():
        section, name = key.split(".")
        data[section][name] = value
    out = []
    for section, values in data.items():
        out.append(f"[{section}]")
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        arrays = {k: v for k, v in values.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items() if k not in tables and k not in arrays]
        for k, v in tables.items():
            out.append(f"[{section}.{k}]")
            out += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
        for k, items in arrays.items():   # [[kernel.external_modules]]
            for item in items:
                out.append(f"[[{section}.{k}]]")
                out += [f"{kk} = {_toml_value(vv)}" for kk, vv in item.items()]
    for dev in recipe.devices:
        out += ["[[devices]]"] + [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(dev).items() if v]
    return "\n".join(out) + "\n"


def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lfspass", *args], capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stdout.write("".join(f"  {l}\n" for l in proc.stderr.splitlines()))
    return proc


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {f: (root / f).read_bytes() if (root / f).exists() else None for f in FILES}


def _install_broken(recipe: Recipe, release: str) -> str:
    """`doit kernel:install grub vfio` for the broken recipe, in-process, as one journaled run."""
    from lfspass.boot.grub import write_grub
    from lfspass.boot.vfio import write_vfio
    from lfspass.kernel.tasks import KernelJob
    from lfspass.plan import build_plan, resolve_devices
    from lfspass.tasks import Context

    with journal.run(recipe.root, f"doit recipe={recipe.path} kernel:install grub vfio") as run:
        KernelJob(Context(recipe=recipe, release=release, devices=resolve_devices(recipe))).do_install()
        plan = build_plan(recipe, release)
        write_grub(plan)
        write_vfio(plan)
    return run.id


def run_bootonce(recipe: Recipe, release: str, base: Path) -> dict:
    from lfspass.boot.autoconfirm import write_autoconfirm
    from lfspass.boot.env import read_env
    from lfspass.boot.once import read_state
    from lfspass.lab.boot_grub import grub_boot
    from lfspass.lab.confirm_image import at_boot_argv, build_confirm_image
    from lfspass.lab.qemu_run import GuestFiles

    t0 = time.monotonic()
    work = base / "bootonce"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root = work / "root"
    shutil.copytree(recipe.root, root, symlinks=True)
    for stale in (root / "boot/grub/grubenv", journal.state_dir(root) / "boot.json"):
        stale.unlink(missing_ok=True)  # start from "nothing tried, nothing confirmed"
    good_file, bad_file = work / "good.toml", work / "broken.toml"
    good_file.write_text(recipe_toml(recipe, **{"host.root": str(root), "lab.dir": str(work)}))
    bad_file.write_text(recipe_toml(recipe, **{"host.root": str(root), "lab.dir": str(work),
                                              "kernel.lfs_version": recipe.kernel.lfs_version + "-broken",
                                              "boot.cmdline": recipe.boot.cmdline + [BROKEN_PARAM],
                                              "boot.tries": BROKEN_TRIES}))
    good, bad = load_recipe(good_file), load_recipe(bad_file)
    with journal.run(root, f"lab: the boot script of {good_file.name}"):
        write_autoconfirm(good)   # the copy's script named the lab recipe; this root's is good.toml
    disk = work / "boot.ext2"
    image = work / "initramfs-confirm.cpio.gz"
    steps: list[dict] = []

    def env() -> dict[str, str]:
        return read_env(root / "boot/grub/grubenv")

    def boot(n: int, label: str, expect_release_file: str, rec: Recipe, want: str) -> dict:
        """Boot once through GRUB; then what the guest's boot script ran, run against the host it saved."""
        d = work / f"boot{n}"
        d.mkdir()
        build_confirm_image(root, release, image)   # the root's rc scripts as they are now
        g = grub_boot(rec, GuestFiles(d), disk, image, True, f"boot {n} ({label})")
        g.pop("qemu")
        step = {"step": f"boot {n}", "what": label, **g, "host_root": str(d / "host")}
        steps.append(step)
        if g["booted"]["kernel"] != f"/boot/{expect_release_file}":
            raise CheckFailed(f"boot {n}: GRUB booted {g['booted']['kernel']}, expected /boot/{expect_release_file} "
                              f"(guest log {g['guest_log']})")
        argv = at_boot_argv(d / "host")
        if argv is None:
            raise CheckFailed(f"boot {n}: the guest ran no lfspass-confirm boot script (guest log {g['guest_log']})")
        proc = _cli(*argv, "--host-root", str(d / "host"))
        outcome = (read_state(rec).get("tried") or {}).get("outcome")
        said = (proc.stdout.strip().splitlines() or [""])[-1] if proc.returncode == 0 else proc.stderr.strip()
        steps.append({"step": f"boot script after boot {n}", "ran": ["lfspass", *argv], "exit": proc.returncode,
                      "said": said, "tried_outcome": outcome, "grubenv": env(),
                      "findings": [l for l in proc.stdout.splitlines() if l.startswith(("FAIL", "WARN"))]})
        if want not in said:
            raise CheckFailed(f"boot {n}: the boot script's `lfspass {' '.join(argv)}` said {said!r}, expected {want!r}")
        return step

    def try_(rec_file: Path) -> subprocess.CompletedProcess:
        proc = _cli("boot", "try", "--recipe", str(rec_file))
        steps.append({"step": f"boot try ({rec_file.name})", "exit": proc.returncode, "grubenv": env(),
                      **({"refused": proc.stderr.strip()} if proc.returncode else {})})
        return proc

    good_vmlinuz = f"vmlinuz-{release}-lfs-{good.kernel.lfs_version}"
    bad_vmlinuz = f"vmlinuz-{release}-lfs-{bad.kernel.lfs_version}"
    verdict: dict = {"ok": False, "recipe": str(recipe.path), "root": str(root), "steps": steps}
    try:
        if try_(good_file).returncode != 0:
            raise CheckFailed(f"lfspass boot try failed: {steps[-1]['refused']}")
        good_id = boot(1, "good kernel, tried once", good_vmlinuz, good, "confirmed:")["booted"]["id"]
        if env().get("saved_entry") != good_id:
            raise CheckFailed(f"after the boot script grubenv is {env()}, expected saved_entry={good_id}")
        before = _snapshot(root)
        run_id = _install_broken(bad, release)
        steps.append({"step": "install broken kernel", "journal_run": run_id, "vmlinuz": bad_vmlinuz,
                      "cmdline_added": BROKEN_PARAM, "tries": BROKEN_TRIES})
        if try_(bad_file).returncode != 0:
            raise CheckFailed(f"lfspass boot try failed: {steps[-1]['refused']}")
        tried = steps[-1]["grubenv"]
        if tried.get("saved_entry") != good_id or tried.get("lfspass_retries") != str(BROKEN_TRIES - 1):
            raise CheckFailed(f"boot try moved the default or set no retries: grubenv {tried}")
        first = boot(2, "broken kernel, try 1 of 2", bad_vmlinuz, bad, "1 try left")
        bad_id = first["booted"]["id"]
        if first["grubenv_after"].get("next_entry") != bad_id:
            raise CheckFailed(f"after try 1 GRUB did not arm {bad_id} again: grubenv {first['grubenv_after']}")
        second = boot(3, "broken kernel, try 2 of 2", bad_vmlinuz, bad, "marked bad")
        if second["grubenv_after"].get("next_entry"):
            raise CheckFailed(f"after the last try next_entry is still set: grubenv {second['grubenv_after']}")
        last = boot(4, "next power cycle: the default", good_vmlinuz, good, "nothing to confirm")
        if last["grubenv_after"].get("saved_entry") != good_id or last["grubenv_after"].get("next_entry"):
            raise CheckFailed(f"after boot 4 grubenv is {last['grubenv_after']}, expected the good entry saved")
        if try_(bad_file).returncode == 0 or "marked bad" not in steps[-1]["refused"]:
            raise CheckFailed(f"boot try of the bad build was not refused: {steps[-1]}")
        proc = _cli("rollback", "--root", str(root), run_id)
        if proc.returncode != 0:
            raise CheckFailed(f"lfspass rollback {run_id} failed: {proc.stderr.strip()}")
        after = _snapshot(root)
        same = {f: before[f] == after[f] for f in FILES}
        steps.append({"step": f"rollback {run_id}", "byte_identical": same,
                      "restored": [l.split()[-1] for l in proc.stdout.splitlines() if l.strip().startswith("restored")]})
        if not all(same.values()):
            raise CheckFailed(f"rollback left differences: {[f for f, ok in same.items() if not ok]}")
        verdict["ok"] = True
    finally:
        verdict["total_s"] = round(time.monotonic() - t0, 1)
        write_atomic(work / "verdict.json", json.dumps(verdict, indent=2, sort_keys=True, default=str) + "\n")
    for s in steps:
        if "booted" in s:
            print(f"bootonce: {s['step']}: GRUB booted {s['booted']['id']}; grubenv after: {s['grubenv_after']}")
        elif s["step"].startswith("boot script"):
            print(f"bootonce: {s['step']}: {s['said']}")
    print(f"bootonce: PASS in {verdict['total_s']} s; verdict {work / 'verdict.json'}")
    return verdict


def _action(*args) -> None:
    run_bootonce(*args)  # the verdict is in verdict.json; doit's database need not keep it


def bootonce_task(ctx) -> dict:
    """doit task ``bootonce``: the boot-once scenario on a copy of the lab root (not in the default run)."""
    from lfspass.lab.tasks import not_a_lab
    from lfspass.lab.verdict import lab_paths
    from lfspass.tasks import run_action

    recipe = ctx.recipe
    if not recipe.lab.enabled or not recipe.boot.initrd:
        return {"basename": "bootonce", "actions": [(run_action, [not_a_lab, recipe])], "uptodate": [False]}
    paths = lab_paths(recipe)
    return {
        "basename": "bootonce",
        "doc": "lab scenario: the boot script confirms a good kernel; a failing one boots its 2 tries, is marked bad "
               "and refused, the good one comes back, rollback",
        "actions": [(run_action, [_action, recipe, ctx.release, paths.base])],
        "file_dep": ctx.kernel_inputs() + [str(recipe.root / recipe.boot.grub_cfg), str(paths.initramfs)],
        "task_dep": ["lab:initramfs", "grub", "vfio"],
        "uptodate": [False],
        "verbosity": 2,
    }
