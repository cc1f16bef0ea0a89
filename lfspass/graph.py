"""The doit glue dodo.py imports: load the recipe once, then each stage's task generators.

This module sits above every stage (it is what ties them into one graph); nothing in
the package imports it.
"""
from __future__ import annotations

from lfspass.boot.tasks import grub_task, vfio_task
from lfspass.errors import LfspassError
from lfspass.kernel.release import kernel_release
from lfspass.kernel.repro import repro_task as kernel_repro_task
from lfspass.kernel.tasks import kernel_tasks
from lfspass.lab.bind.tasks import labbind_tasks
from lfspass.lab.boot_once import bootonce_task
from lfspass.lab.nested.tasks import nested_tasks
from lfspass.lab.tasks import lab_tasks
from lfspass.plan import resolve_devices
from lfspass.plugins import get_plugin_manager
from lfspass.recipe import load_recipe
from lfspass.tasks import Context, Reporter, fail
from lfspass.vm.tasks import vm_tasks

__all__ = ["Context", "Reporter", "load_context", "kernel_tasks", "kernel_repro_task", "grub_task", "vfio_task", "lab_tasks", "bootonce_task", "vm_tasks", "nested_tasks",
           "labbind_tasks"]


def load_context(recipe_arg: str | None) -> Context:
    """Load the recipe named by ``doit recipe=PATH`` / $LFSPASS_RECIPE / the lab default."""
    try:
        recipe = load_recipe(recipe_arg)
        get_plugin_manager()
        return Context(recipe=recipe, release=kernel_release(recipe), devices=resolve_devices(recipe))
    except LfspassError as exc:
        fail(exc)
        raise  # unreachable
