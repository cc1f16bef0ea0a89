"""`lfspass groups`: list IOMMU groups with each member and whether the group is viable."""
from __future__ import annotations

import argparse
import sys

from lfspass.cli.output import print_json
from lfspass.host.groups import groups_json, read_groups, render_text
from lfspass.host.read import Host


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host-root", default="/", metavar="DIR",
                        help="folder standing for / (a `lfspass doctor --save` copy); default: this host")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def run(args: argparse.Namespace) -> int:
    host = Host(args.host_root)
    groups = read_groups(host)
    if args.json:
        print_json(groups_json(host, groups))
    else:
        sys.stdout.write(render_text(host, groups))
    return 0
