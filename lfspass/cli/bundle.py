"""`lfspass bundle`: pack the recipe's installed kernel into one content-addressed file for other hosts."""
from __future__ import annotations

import argparse

from lfspass.cli.output import print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", metavar="PATH", help="the recipe (default: $LFSPASS_RECIPE, else recipes/lab.toml)")
    parser.add_argument("--release", metavar="REL", help="the installed release to pack (default: the recipe's kernel)")
    parser.add_argument("--out", metavar="DIR", help="where the bundle goes (default: <build_dir>/bundles)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lfspass.fleet.bundle import write_bundle
    from lfspass.kernel.release import kernel_release
    from lfspass.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    release = args.release or kernel_release(recipe)
    out = write_bundle(recipe, release, Path(args.out) if args.out else Path(recipe.kernel.build_dir) / "bundles")
    if args.json:
        print_json(out)
    else:
        print(f"bundle: {out['path']}\n  {release}, {out['files']} files, {out['bytes']} bytes; install it on a host "
              "with `lfspass install --bundle FILE --recipe HOST.toml` (the name carries its digest: keep it)")
    return 0
