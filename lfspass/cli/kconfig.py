"""``lfspass kconfig``: apply --set requests to a .config in place and explain refusals."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from lfspass.errors import KconfigError

_SET = re.compile(r"^(?:CONFIG_)?([A-Za-z0-9_]+)=(.*)$")
_SHOWN = 10  # human output lists this many knock-on changes; --json lists all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tree", required=True, type=Path,
                        help="kernel source tree, or a Kconfig folder (a Kconfig file at its top)")
    parser.add_argument("--config", required=True, type=Path,
                        help=".config to update in place (created when --base is given)")
    parser.add_argument("--base", help="start from tinyconfig, defconfig (kernel trees), allnoconfig, "
                        "alldefconfig, allyesconfig, allmodconfig or a config file (.xz works) instead of "
                        "--config's current content")
    parser.add_argument("--conf-source", metavar="TREE|TARBALL|DIR",
                        help="for a Kconfig folder that is no kernel tree: the kernel sources whose own "
                        "scripts/kconfig/conf reads it (a kernel tree, a source tarball, or a folder of "
                        "linux-source-*.tar.xz, newest used); default $LFSPASS_CONF_SOURCE, else the kernel "
                        "tree around the folder, else the newest /usr/src/linux-source-*.tar.xz. A kernel "
                        "tree always uses its own conf. Without any, nothing is written")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SYM=VAL",
                        help="request a value (y, m, n, a number or a string); repeatable")
    parser.add_argument("--resolve", action="store_true",
                        help="also switch on the symbols a request depends on (never COMPILE_TEST, "
                        "EXPERT or test options; never turns one off)")
    parser.add_argument("--arch", default="x86_64", help="kernel ARCH (default x86_64)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_set(text: str) -> tuple[str, str]:
    """``SYM=VAL`` (CONFIG_ prefix and quotes allowed) -> (SYM, VAL)."""
    m = _SET.match(text.strip())
    if not m or not m.group(2):
        raise KconfigError(f"--set {text!r}: expected SYMBOL=VALUE, e.g. --set VFIO_PCI=m")
    value = m.group(2)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return m.group(1), value


def _require_text(flag: str, path: Path | None) -> None:
    """A .config is UTF-8 text: a binary file is refused before conf reads (or rewrites) it."""
    if path is None or not path.is_file():
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError as exc:
        raise KconfigError(f"{flag} {path}: cannot read ({exc.strerror})") from None
    if path.suffix == ".xz" and head.startswith(b"\xfd7zXZ"):
        return
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 1 MiB boundary
            raise KconfigError(f"{flag} {path}: not a text .config (binary data at byte {exc.start}); "
                               "give a kernel .config file") from None
    if b"\0" in head:
        raise KconfigError(f"{flag} {path}: not a text .config (NUL bytes); give a kernel .config file")


def run(args: argparse.Namespace) -> int:
    from lfspass.kernel.kconfig.configure import Request, configure

    requests = [Request(*parse_set(s), source="--set") for s in args.sets]
    if not args.tree.is_dir():
        raise KconfigError(f"--tree {args.tree}: no such folder; pass a kernel source tree")
    for flag, path in (("--config", args.config), ("--base", Path(args.base) if args.base else None)):
        _require_text(flag, path)
    res = configure(args.tree, args.config, requests, base=args.base, resolve=args.resolve,
                    arch=args.arch, conf_source=args.conf_source)
    if args.json:
        from lfspass.cli.output import print_json

        print_json({
            "config": str(args.config), "changed": res.changed,
            "changes": [{"symbol": c.symbol, "old": c.old, "new": c.new} for c in res.changes],
            "skipped": [{"symbol": s.symbol, "note": s.why} for s in res.skipped],
            "resolved": [{"symbol": r.symbol, "value": r.value, "why": r.why} for r in res.resolved],
            "summary": res.summary,
        })
        return 0
    if not res.changed:
        print(f"{args.config}: up to date, nothing changed")
    else:
        print(f"{args.config}: written, {len(res.changes)} symbol(s) changed")
    asked = {r.symbol for r in requests} | {r.symbol for r in res.resolved}
    # Requested and resolved symbols first: those are what the user is looking for; the
    # knock-on changes (hundreds for a new file) are only sampled.
    mine = [c for c in res.changes if c.symbol in asked]
    others = [c for c in res.changes if c.symbol not in asked]
    # After --resolve every knock-on change is listed: the user must see all it moved.
    shown = len(others) if res.resolved else _SHOWN
    for c in mine + others[:shown]:
        print(f"  {c.symbol}: {c.old or '(absent)'} -> {c.new or '(absent)'}")
    if len(others) > shown:
        print(f"  ... and {len(others) - _SHOWN} more (--json lists all)")
    for r in res.resolved:
        print(f"resolved {r.symbol}={r.value} ({r.why})")
    for s in res.skipped:
        print(f"skipped {s.symbol}: {s.why}")
    for line in res.summary:
        print(f"upgrade: {line}")
    return 0
