"""doit sub-tasks ``lab:initramfs`` and ``lab:boot``, and the lab's switches (``iommu=off``, ``lab=cached``)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from lfspass.errors import InputError, LfspassError
from lfspass.lab.verdict import lab_paths, run_lab
from lfspass.recipe import Recipe


def switch(name: str, value: str | None) -> bool | None:
    if value in (None, ""):
        return None
    if value.lower() in ("on", "1", "true", "yes"):
        return True
    if value.lower() in ("off", "0", "false", "no"):
        return False
    raise InputError(f"{name}={value!r}: expected on or off (e.g. `doit lab iommu=off` runs the negative lab)")


def lab_options(recipe: Recipe) -> tuple[bool, bool]:
    """(iommu, cached): ``doit iommu=off`` / $LFSPASS_LAB_IOMMU over ``[lab] iommu``;
    ``doit lab=cached`` / $LFSPASS_LAB_CACHED=1 reuse a passing verdict."""
    from doit import get_var

    iommu = switch("doit variable iommu", get_var("iommu", None))
    if iommu is None:
        iommu = switch("LFSPASS_LAB_IOMMU", os.environ.get("LFSPASS_LAB_IOMMU"))
    cached = get_var("lab", None) == "cached" or bool(switch("LFSPASS_LAB_CACHED", os.environ.get("LFSPASS_LAB_CACHED")))
    return recipe.lab.iommu if iommu is None else iommu, cached


def _verdict_ok(path: Path):
    """uptodate check for ``lab=cached``: a passing verdict.json is reused (and shown)."""
    def check(task, values) -> bool:
        try:
            v = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(v, dict) or v.get("ok") is not True:
            return False
        print(f"lab: cached verdict ({path}): device {v.get('device')} {v.get('id')} in IOMMU group "
              f"{v.get('group')}, driver {v.get('driver')}; IOMMU enabled: {v.get('iommu_enabled')}")
        return True
    return check


def wrong_recipe(recipe: Recipe, kind: str, switch: str, advice: str) -> None:
    raise InputError(f"{recipe.path} is not a {kind} recipe ([lab] {switch} = false); {advice}")


def wrong_recipe_task(recipe: Recipe, kind: str, switch: str, advice: str) -> dict:
    """The one sub-task a recipe of another kind gets: it fails with one line naming the recipe to run."""
    from lfspass.tasks import run_action

    return {"name": "boot", "doc": f"(not a {kind} recipe)", "uptodate": [False],
            "actions": [(run_action, [wrong_recipe, recipe, kind, switch, advice])]}


def not_a_lab(recipe: Recipe) -> None:
    wrong_recipe(recipe, "lab", "enabled", "run the lab with recipe=recipes/lab.toml, or use `lfspass doctor` on a real host")


def files_under(path: Path) -> list[Path]:
    """``path`` itself when it is a file, the files below it when a folder, else nothing."""
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []


def boot_files(recipe: Recipe) -> list[Path]:
    """Every file of the root an initramfs copies: lfspass's own (maybe not written yet) and any other
    file in those folders (their names also go into uptodate, so a removed one counts)."""
    from lfspass.boot.vfio import AUTOLOAD_FILES, MODPROBE_CONF
    from lfspass.lab.initramfs import BOOT_FILES

    return sorted({recipe.root / MODPROBE_CONF, recipe.root / AUTOLOAD_FILES[recipe.host.init],
                   *(p for rel in BOOT_FILES for p in files_under(recipe.root / rel))})


def lab_tasks(ctx) -> Iterator[dict]:
    """doit sub-tasks ``lab:initramfs`` and ``lab:boot`` for the context's recipe and kernel."""
    from doit.tools import config_changed

    from lfspass.lab.initramfs import BUSYBOX, INIT_SCRIPT, build_initramfs
    from lfspass.tasks import fail, run_action

    recipe, release = ctx.recipe, ctx.release
    if not recipe.lab.enabled:
        # A real host's recipe: booting its kernel beside QEMU's edu would prove nothing.
        yield wrong_recipe_task(recipe, "lab", "enabled", "run the lab with recipe=recipes/lab.toml, or use "
                                "`lfspass doctor` on a real host")
        return
    try:
        iommu, cached = lab_options(recipe)
        if recipe.lab.nested:
            # The nested lab's first boot only saves L1's host for `vm`: a passing one is kept
            # (so a second nested run only boots L1 with QEMU), and a VM device L1 does not
            # have fails here, before any guest boots.
            from lfspass.lab.nested.vm_check import precheck

            cached = True
            precheck(recipe)
    except LfspassError as exc:
        fail(exc)
    paths = lab_paths(recipe, iommu)
    files = boot_files(recipe)
    yield {
        "name": "initramfs",
        "doc": "busybox initramfs with the installed kernel's modules and the root's modprobe.d / autoload files",
        "actions": [(run_action, [build_initramfs, recipe.root, release, paths.initramfs])],
        # A missing busybox is left to the action, which names the package to install.
        "file_dep": ctx.kernel_inputs() + [str(p) for p in files] + [str(INIT_SCRIPT)]
                    + ([str(BUSYBOX)] if BUSYBOX.is_file() else []),
        "targets": [str(paths.initramfs)],
        "uptodate": [config_changed(json.dumps([release, str(recipe.root), list(map(str, files))]))],
        "clean": True,
    }
    fingerprint = json.dumps([release, iommu, recipe.lab.timeout, recipe.lab.memory, recipe.lab.accel, str(recipe.root)])
    yield {
        "name": "boot",
        "doc": "boot the installed kernel in QEMU with the GRUB entry's parameters and check vfio-pci",
        "actions": [(run_action, [run_lab, recipe, release, iommu])],
        "file_dep": ctx.kernel_inputs() + [str(recipe.root / recipe.boot.grub_cfg), str(paths.initramfs)],
        "targets": [str(paths.verdict)],
        # A lab run is a measurement: it repeats every time unless the cached verdict is asked for.
        "uptodate": [config_changed(fingerprint), _verdict_ok(paths.verdict) if cached else False],
        "clean": True,
        "verbosity": 2,
    }
