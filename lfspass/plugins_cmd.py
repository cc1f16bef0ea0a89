"""`lfspass plugins`: which plugins are loaded and which PCI ids each claims."""
from __future__ import annotations

import argparse
import sys

from .cli import print_json
from .plugins import BLOCK_ENV, blocked_names, claims, get_plugin_manager


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _source(pm, name: str) -> str:
    """Where a plugin comes from: its distribution for entry points, else its file."""
    plugin = pm.get_plugin(name)
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return f"{dist.project_name} {dist.version}"
    return getattr(plugin, "__file__", None) or getattr(plugin, "__name__", "?")


def run(args: argparse.Namespace) -> int:
    pm = get_plugin_manager()
    table = claims(pm)
    rows = [{"name": name, "ids": ids, "source": _source(pm, name), "doc": (pm.get_plugin(name).__doc__ or "").strip()}
            for name, ids in table.items()]
    if args.json:
        print_json({"plugins": rows, "blocked": sorted(blocked_names())})
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        ids = ", ".join(r["ids"]) if r["ids"] else "(no ids: sees every device)"
        ids = ids.replace("*", "* (any id no other plugin claims)")
        print(f"{r['name']:<{width}}  {ids}")
    if blocked_names():
        print(f"blocked by {BLOCK_ENV}: {', '.join(sorted(blocked_names()))}", file=sys.stderr)
    return 0
