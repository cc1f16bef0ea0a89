"""`lfspass plugins`: which plugins are loaded, which PCI ids each owns, and which claims were overridden."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from lfspass.cli.output import print_json
from lfspass.plugins import BLOCK_ENV, blocked_names, claims, get_plugin_manager, is_builtin, ownership, source_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def run(args: argparse.Namespace) -> int:
    pm = get_plugin_manager()
    owned = ownership(pm)
    rows: list[dict[str, Any]] = [{"name": name, "ids": ids, "builtin": is_builtin(pm, name), "source": source_of(pm, name),
             "owns": [i for i in ids if owned.owner.get(i) == name],
             "overridden": {i: owned.owner[i] for i in ids if owned.owner.get(i) != name},
             "doc": (pm.get_plugin(name).__doc__ or "").strip().splitlines()[0] if pm.get_plugin(name).__doc__ else ""}
            for name, ids in claims(pm).items()]
    if args.json:
        print_json({"plugins": rows, "owners": owned.owner, "overridden": owned.overridden,
                    "blocked": sorted(blocked_names())})
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        ids = ", ".join(r["ids"]) if r["ids"] else "(no ids: sees every device)"
        ids = ids.replace("*", "* (any id no other plugin claims)")
        kind = "built-in" if r["builtin"] else r["source"]
        print(f"{r['name']:<{width}}  {ids}  [{kind}]")
        for pci_id, winner in r["overridden"].items():
            print(f"{'':<{width}}  {pci_id} overridden by {winner}")
    if blocked_names():
        print(f"blocked by {BLOCK_ENV}: {', '.join(sorted(blocked_names()))}", file=sys.stderr)
    return 0
