"""`lfspass rollback [--list] [RUN] [--force]`: undo what lfspass wrote under the root in a run and after."""
from __future__ import annotations

import argparse

from lfspass.cli.output import print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", metavar="RUN",
                        help="run id (or its number in --list); default: the newest run. Later runs are undone too")
    parser.add_argument("--list", action="store_true", help="list the journaled runs and the files each changed")
    parser.add_argument("--force", action="store_true", help="also overwrite files changed since lfspass wrote them")
    parser.add_argument("--recipe", metavar="PATH", help="the recipe whose [host] root to use")
    parser.add_argument("--root", metavar="DIR", help="the install root (instead of the recipe's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lfspass.journal.rollback import list_runs, rollback

    if args.root:
        root = Path(args.root)
    else:
        from lfspass.recipe import load_recipe

        root = load_recipe(args.recipe).root
    if args.list:
        runs = list_runs(root)
        if args.json:
            print_json([{k: v for k, v in r.items() if k != "dir"} for r in runs])
            return 0
        if not runs:
            print(f"no journaled runs under {root}")
        for n, r in enumerate(runs, start=1):
            mark = " (rolled back)" if r.get("rolled_back") else ""
            print(f"{n:3}  {r['id']}  {r['started']}  {r['label']}{mark}")
            for e in r["entries"]:
                what = "new" if e["before"] is None else "removed" if e["after"] is None and e["done"] else "changed"
                print(f"       {what:8} {e['path']}")
        return 0
    undone, restored = rollback(root, args.run, force=args.force)
    if args.json:
        print_json({"run": undone["id"], "restored": restored})
    else:
        print(f"rolled back to the state before run {undone['id']} ({undone['label']}): "
              f"{len(restored)} path(s) restored under {root}")
        for rel in restored:
            print(f"  restored {rel}")
    return 0
