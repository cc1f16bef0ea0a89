"""The doit glue dodo.py imports: load the recipe once, then each stage's task generators.

This module sits above every stage (it is what ties them into one graph); nothing in
the package imports it.
"""
from __future__ import annotations

from lfspass.errors import LfspassError
from lfspass.kernel.release import kernel_release
from lfspass.plugins import get_plugin_manager
from lfspass.recipe import load_recipe
from lfspass.tasks import Context, Reporter, fail

__all__ = ["Context", "Reporter", "load_context", "kernel_tasks", "grub_task", "vfio_task", "lab_tasks", "bootonce_task", "vm_tasks", "nested_tasks"]


def load_context(recipe_arg: str | None) -> Context:
    """Load the recipe named by ``doit recipe=PATH`` / $LFSPASS_RECIPE / the lab default."""
    from lfspass.plan import resolve_devices

    try:
        recipe = load_recipe(recipe_arg)
        get_plugin_manager()
        return Context(recipe=recipe, release=kernel_release(recipe), devices=resolve_devices(recipe))
    except LfspassError as exc:
        fail(exc)
        raise  # unreachable


def kernel_tasks(ctx: Context):
    from lfspass.kernel.tasks import kernel_tasks as tasks

    return tasks(ctx)


def grub_task(ctx: Context) -> dict:
    from lfspass.boot.tasks import grub_task as task

    return task(ctx)


def vfio_task(ctx: Context) -> dict:
    from lfspass.boot.tasks import vfio_task as task

    return task(ctx)


def lab_tasks(ctx: Context):
    from lfspass.lab.tasks import lab_tasks as tasks

    return tasks(ctx)


def bootonce_task(ctx: Context) -> dict:
    from lfspass.lab.boot_once import bootonce_task as task

    return task(ctx)


def vm_tasks(ctx: Context):
    from lfspass.vm.tasks import vm_tasks as tasks

    return tasks(ctx)


def nested_tasks(ctx: Context):
    from lfspass.lab.nested.tasks import nested_tasks as tasks

    return tasks(ctx)
