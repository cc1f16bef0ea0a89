"""doit sub-tasks ``nested:image`` and ``nested:boot`` of the nested lab (after ``lab`` and ``vm``)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator

from lfspass.errors import LfspassError


def nested_options() -> bool:
    """vfio_files: ``doit vfio=off`` / $LFSPASS_LAB_VFIO=off leaves the vfio files out of L1 (the negative case)."""
    from doit import get_var

    from lfspass.lab.tasks import switch

    value = switch("doit variable vfio", get_var("vfio", None))
    if value is None:
        value = switch("LFSPASS_LAB_VFIO", os.environ.get("LFSPASS_LAB_VFIO"))
    return True if value is None else value


def _raise(exc: LfspassError) -> None:
    raise exc


def nested_tasks(ctx) -> Iterator[dict]:
    """doit sub-tasks ``nested:image`` and ``nested:boot`` for a nested lab recipe."""
    from doit.tools import config_changed

    from lfspass.lab.initramfs import BUSYBOX, INIT_SCRIPT
    from lfspass.lab.nested.image import L2_INIT, NESTED_SCRIPT, build_l1_image, qemu_files
    from lfspass.lab.nested.verdict import nested_paths, run_nested
    from lfspass.lab.nested.vm_check import l2_vm
    from lfspass.lab.tasks import boot_files, files_under, wrong_recipe_task
    from lfspass.plan import kernel_paths
    from lfspass.tasks import run_action
    from lfspass.vm.launcher import launcher_paths
    from lfspass.vm.plan import build_vm_plan

    recipe, release = ctx.recipe, ctx.release
    if not (recipe.lab.enabled and recipe.lab.nested):
        yield wrong_recipe_task(recipe, "nested lab", "nested", "run it with recipe=recipes/lab-nested.toml")
        return
    try:
        vfio_files = nested_options()
        plan = build_vm_plan(recipe, l2_vm(recipe))
        firmware = [plan.firmware.code]  # OVMF CODE or SeaBIOS, at the path the launcher names
        qemu = qemu_files(firmware)
    except LfspassError as exc:
        # Planned before L1's host is saved (`doit list`), or a bad VM: the boot task says why.
        yield {"name": "boot", "doc": "(cannot be planned yet)", "uptodate": [False],
               "actions": [(run_action, [_raise, exc])], "verbosity": 2}
        return
    paths = nested_paths(recipe, vfio_files)
    launcher = launcher_paths(plan)["sh"]
    vm_files = files_under(plan.dir)
    inputs = [*boot_files(recipe), *vm_files, launcher, *qemu, INIT_SCRIPT, NESTED_SCRIPT, L2_INIT, BUSYBOX]
    kwargs = {"out": paths.image, "root": recipe.root, "release": release, "vmlinuz": kernel_paths(recipe, release).vmlinuz,
              "vm_dir": plan.dir, "launcher": launcher, "firmware": firmware, "vfio_files": vfio_files}
    yield {
        "name": "image",
        "doc": "L1's initramfs: the lab initramfs + Debian's QEMU, its libraries and firmware, the VM folder, L2's files",
        "actions": [(run_action, [build_l1_image], kwargs)],
        "file_dep": ctx.kernel_inputs() + sorted({str(p) for p in inputs if p.exists()}),
        "task_dep": ["vm"],
        "targets": [str(paths.image)],
        "uptodate": [config_changed(json.dumps([release, vfio_files, sorted(map(str, inputs))]))],
        "clean": True,
    }
    yield {
        "name": "boot",
        "doc": "boot L1, run the VM launcher inside it and check that L2 sees the stand-in device",
        "actions": [(run_action, [run_nested, recipe, release, vfio_files])],
        "file_dep": ctx.kernel_inputs() + [str(recipe.root / recipe.boot.grub_cfg), str(paths.image)],
        "targets": [str(paths.verdict)],
        "uptodate": [False],   # a measurement: it runs every time
        "clean": True,
        "verbosity": 2,
    }
