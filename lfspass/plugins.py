"""The one factory for the plugin manager, the PCI-id claims, and the calls that route device hooks.

Built-in plugins (package ``lfspass_plugins``, source folder ``plugins/``) and third-party
ones register the same way: through the ``lfspass`` entry-point group.  Built-ins are
registered first, then third-party plugins, each sorted by (distribution, name), so the
order and the precedence never depend on installation order or on sys.path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from lfspass import hookspecs
from lfspass.errors import PluginError

BLOCK_ENV = "LFSPASS_DISABLE_PLUGINS"
ENTRY_POINT_GROUP = "lfspass"
DIST_NAME = "lfspass"


def blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def _entry_points() -> list[tuple[bool, str, metadata.EntryPoint]]:
    """(built-in?, distribution, entry point): built-ins first, then the rest; each sorted by name."""
    builtin, others, seen = [], [], set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                continue  # a distribution seen twice on sys.path counts once
            seen.add(ep.name)
            if name.lower() == DIST_NAME:
                builtin.append((True, name, ep))
            else:
                others.append((False, name, ep))
    def key(row):
        return row[1].lower(), row[2].name

    return sorted(builtin, key=key) + sorted(others, key=key)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from."""

    def __init__(self) -> None:
        super().__init__("lfspass")
        self.builtin: set[str] = set()       # names registered from lfspass's own distribution
        self.sources: dict[str, str] = {}    # name -> "distribution version"


@lru_cache(maxsize=1)
def get_plugin_manager() -> PluginManager:
    """Specs, blocked names, every entry point (built-ins first), then ``check_pending``."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in blocked_names():
        pm.set_blocked(name)
    rows = _entry_points()
    if not any(builtin for builtin, _, _ in rows):
        raise PluginError("lfspass's built-in plugins are not registered (no 'lfspass' entry points from the "
                          "lfspass distribution); reinstall it: pip install lfspass (or pip install -e . in a clone)")
    for builtin, dist, ep in rows:
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a third-party plugin failing to import
            raise PluginError(f"plugin '{ep.name}' from {dist} (entry-point group '{ENTRY_POINT_GROUP}') failed to "
                              f"load ({exc}); uninstall it or block it with {BLOCK_ENV}={ep.name}") from None
        pm.register(plugin, name=ep.name)
        pm.sources[ep.name] = f"{dist} {_version(dist)}"
        if builtin:
            pm.builtin.add(ep.name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin hook does not match a spec: {exc}; see lfspass/hookspecs.py") from None
    return pm


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def is_builtin(pm: pluggy.PluginManager, name: str) -> bool:
    return name in getattr(pm, "builtin", ())


def source_of(pm: pluggy.PluginManager, name: str) -> str:
    """Where a plugin comes from: 'dist version' for entry points, else its module file."""
    known = getattr(pm, "sources", {})
    if name in known:
        return known[name]
    plugin = pm.get_plugin(name)
    return str(getattr(plugin, "__file__", None) or getattr(plugin, "__name__", "?"))


def claims(pm: pluggy.PluginManager) -> dict[str, list[str]]:
    """plugin name -> PCI ids it claims (``*`` = fallback), in registration order."""
    out: dict[str, list[str]] = {}
    for impl in pm.hook.lfspass_pci_ids.get_hookimpls():  # registration order
        name = pm.get_name(impl.plugin) or "?"
        ids = impl.function() or []
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
            raise PluginError(f"plugin '{name}': lfspass_pci_ids returned {ids!r}; return a list of "
                              "'vendor:device' strings such as [\"10de:1e37\"] (see lfspass/hookspecs.py)")
        out[name] = [i.lower() for i in ids]
    return out


@dataclass
class Ownership:
    """Who handles each claimed PCI id, and which claims lost to another plugin."""

    owner: dict[str, str] = field(default_factory=dict)             # id -> plugin
    overridden: dict[str, list[str]] = field(default_factory=dict)  # id -> plugins whose claim lost


def ownership(pm: pluggy.PluginManager) -> Ownership:
    """A third-party claim beats a built-in one; among equals the first registered wins."""
    table = claims(pm)
    order = sorted(table, key=lambda n: (is_builtin(pm, n), list(table).index(n)))
    result = Ownership()
    for name in order:
        for pci_id in table[name]:
            if pci_id in result.owner:
                result.overridden.setdefault(pci_id, []).append(name)
            else:
                result.owner[pci_id] = name
    return result


def owner_of(pm: pluggy.PluginManager, pci_id: str) -> str:
    """Name of the plugin that handles ``pci_id``: an exact claim wins, then ``*``."""
    owners = ownership(pm).owner
    return owners.get(pci_id.lower()) or owners.get("*", "")


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
