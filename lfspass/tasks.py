"""doit glue: load the recipe once for dodo.py, report failures as one `error:` line."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from doit.reporter import ConsoleReporter

from . import __version__
from .errors import LfspassError
from .plan import kernel_paths, kernel_release
from .plugins import claims, get_plugin_manager
from .recipe import Recipe, load_recipe


@dataclass
class Context:
    """What every task generator gets: the recipe and the kernel release it targets."""

    recipe: Recipe
    release: str
    devices: list = field(default_factory=list)  # plan.Device, resolved once at load

    @property
    def builds_kernel(self) -> bool:
        """True when lfspass builds the kernel (``[kernel] source`` set), so grub/vfio wait for it."""
        return bool(self.recipe.kernel.source)

    def kernel_inputs(self) -> list[str]:
        """Installed-kernel files that grub/vfio read, declared as their file_dep.

        When lfspass builds the kernel these are targets of ``kernel:install`` (doit then
        orders the tasks); otherwise they are whatever is already installed.
        """
        paths = kernel_paths(self.recipe, self.release)
        if self.builds_kernel:
            return [str(paths.manifest)]
        return [str(p) for p in (paths.config, paths.modules_dep, paths.modules_builtin) if p.exists()]

    def fingerprint(self, *sections: str) -> str:
        """A stable digest input for ``config_changed``: recipe sections + plugins + version."""
        data = {name: _plain(getattr(self.recipe, name)) for name in sections}
        data["release"] = self.release
        data["lfspass"] = __version__
        data["plugins"] = claims(get_plugin_manager())
        return json.dumps(data, sort_keys=True, default=str)


def _plain(value: object) -> object:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    try:
        return asdict(value)  # type: ignore[arg-type]
    except TypeError:
        return value


def fail(exc: LfspassError) -> None:
    """Print the one-line error and leave; used while dodo.py loads (no task ran yet)."""
    print(f"error: {exc.one_line()}", file=sys.stderr)
    raise SystemExit(2)


def load_context(recipe_arg: str | None) -> Context:
    """Load the recipe named by ``doit recipe=PATH`` / $LFSPASS_RECIPE / the lab default."""
    try:
        from .plan import resolve_devices

        recipe = load_recipe(recipe_arg)
        get_plugin_manager()
        return Context(recipe=recipe, release=kernel_release(recipe), devices=resolve_devices(recipe))
    except LfspassError as exc:
        fail(exc)
        raise  # unreachable


class Reporter(ConsoleReporter):
    """doit's console reporter, but an expected failure is one `error:` line, no traceback."""

    def add_failure(self, task, fail):
        if getattr(fail, "lfspass", False):
            sys.stderr.write(f"error: {fail.message}\n")
            sys.stderr.flush()
            return
        super().add_failure(task, fail)


def run_action(func, *args, **kwargs):
    """Run ``func``; an LfspassError becomes a doit failure carrying it (no traceback)."""
    from doit.exceptions import TaskFailed

    try:
        result = func(*args, **kwargs)
    except LfspassError as exc:
        failed = TaskFailed(exc.one_line())
        failed.lfspass = True  # tells Reporter to print one line, not a traceback
        return failed
    return result if isinstance(result, dict) else None


def _host_fingerprint(ctx: Context) -> str:
    """Inputs of grub/vfio besides the installed kernel: recipe values, resolved ids, plugins."""
    ids = [(d.id, d.address, d.plugin) for d in ctx.devices]
    return ctx.fingerprint("host", "boot", "devices", "vms") + json.dumps(
        [ids, ctx.recipe.kernel.vfio, ctx.recipe.kernel.lfs_version])


def _write(kind: str, recipe: Recipe, release: str) -> None:
    from .plan import build_plan

    plan = build_plan(recipe, release)  # read the installed kernel now, after kernel:install ran
    if kind == "grub":
        from .grub import write_grub

        write_grub(plan)
    else:
        from .vfio import write_vfio

        write_vfio(plan)


def host_task(ctx: Context, kind: str, targets: list[Path], templates: list[str]) -> dict:
    """The ``grub`` or ``vfio`` task: file_dep on the installed kernel, uptodate on recipe values."""
    from doit.tools import config_changed

    from .render import TEMPLATES

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
