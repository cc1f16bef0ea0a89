"""`lfspass bind DEV…` / `lfspass release DEV…`: a device's IOMMU group to vfio-pci now, and back."""
from __future__ import annotations

import argparse
import os
import sys

from lfspass.cli.output import print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("devices", nargs="+", metavar="DEV",
                        help="a PCI address (82:00.0), an id from the recipe's [[devices]] (10de:1e37) or a "
                             "[[devices]] name; the rest of each one's IOMMU group goes along")
    parser.add_argument("--recipe", metavar="PATH", help="the recipe whose [[devices]] DEV may name (also "
                        "$LFSPASS_RECIPE); its [host] sysfs_root is the default host root")
    parser.add_argument("--host-root", metavar="DIR",
                        help="the root whose sysfs to change; default: the recipe's [host] sysfs_root, else /")
    parser.add_argument("--json", action="store_true", help="print what happened as JSON")
    if parser.prog.endswith("release"):
        parser.add_argument("--recorded", action="store_true",
                            help="only devices recorded at bind (a VM launcher's release): one that was on "
                                 "vfio-pci before stays there")


def run(args: argparse.Namespace) -> int:
    from lfspass.host.bind import bind, release, records_path
    from lfspass.host.bindplan import resolve

    recipe = None
    if args.recipe or os.environ.get("LFSPASS_RECIPE"):
        from lfspass.recipe import load_recipe

        recipe = load_recipe(args.recipe)
    root = args.host_root or (recipe.host.sysfs_root if recipe is not None else "/")
    addresses = resolve(root, args.devices, recipe)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    outcome = bind(root, addresses, say) if args.command == "bind" else \
        release(root, addresses, say, recorded_only=args.recorded)
    if args.json:
        print_json(outcome.as_dict())
        return 0
    moved = [s for s in outcome.steps if s.changed]
    if args.command == "bind":
        back = ", ".join(sorted({s.before or "no driver" for s in moved}))
        print(f"bound {len(moved)} device(s) to vfio-pci" + (
            f"; `lfspass release {' '.join(args.devices)}` gives them back to {back} "
            f"(recorded in {records_path(outcome.root)})" if moved else ""))
    else:
        print(f"released {len(moved)} device(s) from vfio-pci")
    return 0
