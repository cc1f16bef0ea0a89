"""Test-only: record which lfspass hooks run, in every Python process the tests start.

tests/conftest.py puts this folder first on PYTHONPATH and names a log in $LFSPASS_TEST_HOOK_LOG,
so Python runs this file at start-up in each process the tests start (the CLI, doit), as
coverage.py measures subprocesses.  For the lfspass plugin manager only, it appends to the log
the name of every hook that is called (pluggy's call monitoring) or whose implementation runs
(``lfspass.plugins.claims`` calls ``lfspass_pci_ids`` implementations directly).  Then it runs
the sitecustomize this folder shadows, if there is one (Debian's installs apport's hook).
tests/test_plugins.py::test_every_hook_is_called_by_some_test reads the log.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any

LOG_ENV = "LFSPASS_TEST_HOOK_LOG"
PROJECT = "lfspass"


def install(log: str) -> None:
    """Trace every lfspass plugin manager made from now on in this process into ``log``."""
    try:
        import pluggy
    except ImportError:  # a Python without pluggy (the system's, a bare venv) runs no lfspass hooks
        return
    base: Any = pluggy.PluginManager
    if getattr(base, "_lfspass_hooktrace", None) == log:
        return
    seen: set[str] = set()

    def record(name: str) -> None:
        if name.startswith(f"{PROJECT}_") and name not in seen:
            seen.add(name)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"{name}\n")

    def traced(name: str, function: Any) -> Any:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            record(name)
            return function(*args, **kwargs)
        return call

    init, register = base.__init__, base.register

    def __init__(self: Any, project_name: str, *args: Any, **kwargs: Any) -> None:
        init(self, project_name, *args, **kwargs)
        if project_name == PROJECT:
            self.add_hookcall_monitoring(lambda name, impls, kwargs: record(name), lambda *a: None)

    def register_traced(self: Any, plugin: Any, name: str | None = None) -> str | None:
        out = register(self, plugin, name)
        if self.project_name == PROJECT and out is not None:
            for caller in self.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function = traced(caller.name, impl.function)
        return out

    base.__init__, base.register, base._lfspass_hooktrace = __init__, register_traced, log


def _run_shadowed() -> None:
    """Run the sitecustomize module that this one hides further down sys.path."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    if os.environ.get(LOG_ENV):
        install(os.environ[LOG_ENV])
    _run_shadowed()
