"""The ``grub`` and ``vfio`` doit tasks: host files that follow the installed kernel and the recipe."""
from __future__ import annotations

import json
from pathlib import Path

from doit.tools import config_changed

from lfspass.boot import autoconfirm
from lfspass.boot.grub import write_grub
from lfspass.boot.vfio import AUTOLOAD_FILES, MODPROBE_CONF, write_vfio
from lfspass.plan import build_plan
from lfspass.recipe import Recipe
from lfspass.render import TEMPLATES
from lfspass.tasks import Context, run_action


def _host_fingerprint(ctx: Context) -> str:
    """Inputs of grub/vfio besides the installed kernel: recipe values, resolved ids, plugins."""
    ids = [(d.id, d.address, d.plugin) for d in ctx.devices]
    return ctx.fingerprint("host", "boot", "devices", "vms") + json.dumps(
        [ids, ctx.recipe.kernel.vfio, ctx.recipe.kernel.lfs_version])


def _write(kind: str, recipe: Recipe, release: str) -> None:
    plan = build_plan(recipe, release)  # read the installed kernel now, after kernel:install ran
    (write_grub if kind == "grub" else write_vfio)(plan)


def host_task(ctx: Context, kind: str, targets: list[Path], templates: list[str]) -> dict:
    """The ``grub`` or ``vfio`` task: file_dep on the installed kernel, uptodate on recipe values."""
    deps = ctx.kernel_inputs() + [str(TEMPLATES / t) for t in templates]
    if kind == "grub" and ctx.recipe.boot.entry_template:
        deps.append(ctx.recipe.boot.entry_template)
    return {
        "basename": kind,
        "actions": [(run_action, [_write, kind, ctx.recipe, ctx.release])],
        "file_dep": deps,
        "targets": [str(t) for t in targets],
        "uptodate": [config_changed(_host_fingerprint(ctx))],
        "clean": [],  # never delete a user's grub.cfg or modprobe.d
        "verbosity": 2,
    }


def grub_task(ctx: Context) -> dict:
    """Write the GRUB menuentry (IOMMU and vfio parameters) into the root's grub.cfg."""
    return host_task(ctx, "grub", [ctx.recipe.root / ctx.recipe.boot.grub_cfg, *autoconfirm.paths(ctx.recipe)],
                     ["grub-entry.j2", "lfspass-confirm.j2", "lfspass-confirm.service.j2"])


def vfio_task(ctx: Context) -> dict:
    """Bind the recipe's devices to vfio-pci at boot (modprobe.d + LFS autoload)."""
    root = ctx.recipe.root
    targets = [root / MODPROBE_CONF, root / AUTOLOAD_FILES[ctx.recipe.host.init]]
    return host_task(ctx, "vfio", targets, ["vfio.conf.j2", "autoload.j2"])
