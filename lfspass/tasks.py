"""The base every stage's doit tasks share: the task context, one-line failures, the reporter."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, is_dataclass

from doit.reporter import ConsoleReporter

from lfspass import __version__
from lfspass.errors import LfspassError
from lfspass.plan import kernel_paths
from lfspass.plugins import claims, get_plugin_manager
from lfspass.recipe import Recipe


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
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def fail(exc: LfspassError) -> None:
    """Print the one-line error and leave; used while dodo.py loads (no task ran yet)."""
    print(f"error: {exc.one_line()}", file=sys.stderr)
    raise SystemExit(2)


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
