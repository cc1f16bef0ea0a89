"""`lfspass install --bundle FILE`: verify a kernel bundle, install it with kernel:install's safety, write grub and vfio."""
from __future__ import annotations

import argparse

from lfspass.cli.output import print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", metavar="FILE", required=True,
                        help="a file `lfspass bundle` wrote (lfspass-<release>-<sha256>.tar), under its own name")
    parser.add_argument("--recipe", metavar="PATH",
                        help="this host's recipe: its root, [boot] and [[devices]] (default: $LFSPASS_RECIPE)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lfspass.fleet.install import install_bundle
    from lfspass.recipe import load_recipe

    out = install_bundle(load_recipe(args.recipe), Path(args.bundle))
    if args.json:
        print_json(out)
    elif out["changed"]:
        print(f"installed {out['release']} from {out['bundle']}: {out['kernel']['vmlinuz']}; "
              f"grub {'updated' if out['grub']['changed'] else 'unchanged'}, vfio "
              f"{'updated' if out['vfio']['changed'] else 'unchanged'}; next: `lfspass boot try --release {out['release']}`")
    else:
        print(f"{out['release']} from {out['bundle']} is installed already; nothing changed")
    return 0
