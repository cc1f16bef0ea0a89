"""doit sub-tasks ``labbind:image`` and ``labbind:boot`` of the runtime-bind lab (recipes/lab-bind.toml)."""
from __future__ import annotations

import json
from collections.abc import Iterator


def labbind_tasks(ctx) -> Iterator[dict]:
    """doit sub-tasks ``labbind:image`` and ``labbind:boot`` for a runtime-bind lab recipe."""
    from doit.tools import config_changed

    from lfspass.lab.bind.image import PYTHON, STEPS_SCRIPT, build_bind_image, lfspass_modules
    from lfspass.lab.bind.verdict import bind_paths, run_bind_lab
    from lfspass.lab.initramfs import BUSYBOX, INIT_SCRIPT
    from lfspass.lab.tasks import boot_files, wrong_recipe_task
    from lfspass.tasks import run_action

    recipe, release = ctx.recipe, ctx.release
    if not (recipe.lab.enabled and recipe.lab.bind):
        yield wrong_recipe_task(recipe, "runtime-bind lab", "bind", "run it with recipe=recipes/lab-bind.toml")
        return
    paths = bind_paths(recipe)
    # The packed lfspass files are inputs: a change to `lfspass bind` makes a new image.
    inputs = [*boot_files(recipe), *lfspass_modules().values(), INIT_SCRIPT, STEPS_SCRIPT, BUSYBOX, PYTHON]
    yield {
        "name": "image",
        "doc": "the lab initramfs + Debian's python3 (what `lfspass bind` loads), lfspass's bind part, the steps script",
        "actions": [(run_action, [build_bind_image, paths.image, recipe.root, release])],
        # All of them, as lab:initramfs does: vfio.conf and the autoload file are `vfio`'s targets
        # (doit orders it first), so the list is the same before the first run and after it.
        "file_dep": ctx.kernel_inputs() + sorted({str(p) for p in inputs}),
        "targets": [str(paths.image)],
        "uptodate": [config_changed(json.dumps([release, str(recipe.root), sorted(map(str, inputs))]))],
        "clean": True,
    }
    yield {
        "name": "boot",
        "doc": "boot the lab guest with e1000e and a shared group; it runs `lfspass bind` / `release`; judge each step",
        "actions": [(run_action, [run_bind_lab, recipe, release])],
        "file_dep": ctx.kernel_inputs() + [str(recipe.root / recipe.boot.grub_cfg), str(paths.image)],
        "targets": [str(paths.verdict)],
        "uptodate": [False],   # a measurement: it runs every time
        "clean": True,
        "verbosity": 2,
    }
