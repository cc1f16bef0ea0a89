"""The boot-once lab scenario (`doit bootonce`): a good kernel is tried and confirmed; a second one
that fails its checks (the same build installed as lfs version ``<ver>-broken`` with
``intel_iommu=off`` on its command line, so no second compile) is tried, boots once through GRUB,
fails `boot confirm`; the next boot is the good kernel again; `lfspass rollback` then puts
grub.cfg, grubenv and the vfio files back byte for byte.  Runs on a copy of the lab root."""
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
FILES = ("boot/grub/grub.cfg", "boot/grub/grubenv", "etc/modprobe.d/vfio.conf")


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
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for k, v in values.items():
            if isinstance(v, dict):
                out.append(f"[{section}.{k}]")
                out += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
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


def run_bootonce(recipe: Recipe, release: str, base: Path, initramfs: Path) -> dict:
    from lfspass.boot.env import read_env
    from lfspass.lab.boot_grub import grub_boot
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
                                              "boot.cmdline": recipe.boot.cmdline + [BROKEN_PARAM]}))
    good, bad = load_recipe(good_file), load_recipe(bad_file)
    disk = work / "boot.ext2"
    steps: list[dict] = []

    def boot(n: int, label: str, expect_release_file: str, rec: Recipe) -> dict:
        d = work / f"boot{n}"
        d.mkdir()
        g = grub_boot(rec, GuestFiles(d), disk, initramfs, True, f"boot {n} ({label})")
        g.pop("qemu")
        step = {"step": f"boot {n}", "what": label, **g, "host_root": str(d / "host")}
        steps.append(step)
        if g["booted"]["kernel"] != f"/boot/{expect_release_file}":
            raise CheckFailed(f"boot {n}: GRUB booted {g['booted']['kernel']}, expected /boot/{expect_release_file} "
                              f"(guest log {g['guest_log']})")
        return step

    def confirm(n: int, rec_file: Path, want_ok: bool) -> None:
        proc = _cli("boot", "confirm", "--recipe", str(rec_file), "--host-root", str(work / f"boot{n}" / "host"))
        steps.append({"step": f"confirm after boot {n}", "exit": proc.returncode, "ok": proc.returncode == 0,
                      "grubenv": read_env(root / "boot/grub/grubenv"),
                      "findings": [l for l in proc.stdout.splitlines() if l.startswith(("FAIL", "WARN"))]})
        if (proc.returncode == 0) != want_ok:
            raise CheckFailed(f"boot confirm after boot {n} exited {proc.returncode}, expected "
                              f"{'success' if want_ok else 'failure'}: {proc.stdout.strip()} {proc.stderr.strip()}")

    def try_(rec_file: Path) -> None:
        proc = _cli("boot", "try", "--recipe", str(rec_file))
        if proc.returncode != 0:
            raise CheckFailed(f"lfspass boot try failed: {proc.stderr.strip()}")
        steps.append({"step": f"boot try ({rec_file.name})", "grubenv": read_env(root / "boot/grub/grubenv")})

    good_vmlinuz = f"vmlinuz-{release}-lfs-{good.kernel.lfs_version}"
    bad_vmlinuz = f"vmlinuz-{release}-lfs-{bad.kernel.lfs_version}"
    verdict: dict = {"ok": False, "recipe": str(recipe.path), "root": str(root), "steps": steps}
    try:
        try_(good_file)
        boot(1, "good kernel, tried once", good_vmlinuz, good)
        confirm(1, good_file, True)
        before = _snapshot(root)
        run_id = _install_broken(bad, release)
        steps.append({"step": "install broken kernel", "journal_run": run_id, "vmlinuz": bad_vmlinuz,
                      "cmdline_added": BROKEN_PARAM})
        try_(bad_file)
        tried = steps[-1]["grubenv"]
        if tried.get("saved_entry") != steps[1]["booted"]["id"]:
            raise CheckFailed(f"boot try moved the default: grubenv {tried}")
        boot(2, "broken kernel, tried once", bad_vmlinuz, bad)
        confirm(2, bad_file, False)
        third = boot(3, "next power cycle: the default", good_vmlinuz, good)
        if third["grubenv_after"].get("saved_entry") != steps[1]["booted"]["id"] or third["grubenv_after"].get("next_entry"):
            raise CheckFailed(f"after boot 3 grubenv is {third['grubenv_after']}, expected the good entry saved")
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
        "doc": "lab scenario: a kernel that fails its checks boots once, the good one comes back, rollback",
        "actions": [(run_action, [_action, recipe, ctx.release, paths.base, paths.initramfs])],
        "file_dep": ctx.kernel_inputs() + [str(recipe.root / recipe.boot.grub_cfg), str(paths.initramfs)],
        "task_dep": ["lab:initramfs", "grub", "vfio"],
        "uptodate": [False],
        "verbosity": 2,
    }
