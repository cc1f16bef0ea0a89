"""The one factory for the plugin manager, and the calls that route device hooks."""
from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "plugins"
BUILTINS = ("tesla_t10", "tesla_p10", "lab", "generic")
BLOCK_ENV = "LFSPASS_DISABLE_PLUGINS"
ENTRY_POINT_GROUP = "lfspass"


def _load_builtin(name: str):
    """Import ``plugins/<name>.py`` by path under a private module name.

    The folder is not a top-level package named ``plugins`` so that no other
    project's ``plugins`` package can shadow it.
    """
    modname = f"lfspass_builtin_plugins.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = BUILTIN_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"built-in plugin {path} is missing; reinstall lfspass from its repository")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module


def blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


@lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """Specs, blocked names, entry-point plugins, built-ins, then ``check_pending``."""
    pm = pluggy.PluginManager("lfspass")
    pm.add_hookspecs(hookspecs)
    for name in blocked_names():
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:  # a third-party plugin failing to import
        raise PluginError(f"a plugin from entry-point group '{ENTRY_POINT_GROUP}' failed to load ({exc}); "
                          f"uninstall it or block it with {BLOCK_ENV}=<name>") from None
    from . import core_hooks

    # "core" carries what every host needs (IOMMU parameters, the VFIO Kconfig set);
    # blocking it is allowed for experiments but leaves the build without VFIO.
    if not pm.is_blocked("core"):
        pm.register(core_hooks, name="core")
    for name in BUILTINS:
        if pm.is_blocked(name):
            continue
        pm.register(_load_builtin(name), name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin hook does not match a spec: {exc}; see lfspass/hookspecs.py") from None
    return pm


def claims(pm: pluggy.PluginManager) -> dict[str, list[str]]:
    """plugin name -> PCI ids it claims (``*`` = fallback)."""
    out: dict[str, list[str]] = {}
    for impl in pm.hook.lfspass_pci_ids.get_hookimpls():
        name = pm.get_name(impl.plugin) or "?"
        out[name] = [i.lower() for i in (impl.function() or [])]
    return out


def owner_of(pm: pluggy.PluginManager, pci_id: str) -> str:
    """Name of the plugin that handles ``pci_id``: an exact claim wins, then ``*``."""
    table = claims(pm)
    for name, ids in table.items():
        if pci_id.lower() in ids:
            return name
    for name, ids in table.items():
        if "*" in ids:
            return name
    return ""


def _flatten(results: list[Any]) -> list[Any]:
    out: list[Any] = []
    for r in results:
        if r:
            out.extend(r)
    return out


def call_host(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> list[Any]:
    """Call ``hook`` with ``device=None`` (where it takes one) on every plugin; flatten."""
    caller = getattr(pm.hook, hook)
    if "device" in caller.spec.argnames:
        kwargs["device"] = None
    # pluggy calls last-registered first; reverse so built-in order reads naturally.
    return _flatten(list(reversed(caller(**kwargs))))


def call_device(pm: pluggy.PluginManager, hook: str, device: Any, **kwargs: Any) -> list[Any]:
    """Call ``hook`` for one device on its owner and on plugins that claim no ids."""
    table = claims(pm)
    others = [pm.get_plugin(n) for n, ids in table.items() if ids and n != device.plugin]
    caller = pm.subset_hook_caller(hook, remove_plugins=others)
    return _flatten(list(reversed(caller(device=device, **kwargs))))
