"""`lfspass boot try|confirm|status`: boot a new kernel once, make it the default only after its checks pass."""
from __future__ import annotations

import argparse
import sys

from lfspass.cli.output import print_json
from lfspass.model import Status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="boot_command", metavar="ACTION", required=True)
    t = sub.add_parser("try", help="boot the newest lfspass kernel once at the next boot; the default stays")
    c = sub.add_parser("confirm", help="check the booted host; on success make the tried entry the default")
    s = sub.add_parser("status", help="default entry, next-boot entry, running release, last confirm result")
    for p in (t, c, s):
        p.add_argument("--recipe", metavar="PATH", help="the recipe (default: $LFSPASS_RECIPE, else recipes/lab.toml)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    c.add_argument("--host-root", metavar="DIR",
                   help="the booted host, or a `doctor --save` copy of it (default: the recipe's sysfs_root)")


def _release(recipe) -> str:
    from lfspass.kernel.release import kernel_release

    return kernel_release(recipe)


def run(args: argparse.Namespace) -> int:
    from lfspass.boot import once
    from lfspass.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.boot_command == "try":
        out = once.boot_try(recipe, _release(recipe))
        if args.json:
            print_json(out)
        else:
            print(f"next boot (once): {out['tried']}\ndefault stays:    {out['default'] or '(grub.cfg default)'}\n"
                  f"grubenv: {out['grubenv']}\n"
                  "reboot now; if the new kernel does not come up, power-cycle the machine (HPE iLO 4: "
                  "Power Management > Server Power > Cold Boot, or `power reset` in iLO's SSH shell): "
                  "GRUB boots the default. Once it is up, run `lfspass boot confirm`.")
        return 0
    if args.boot_command == "confirm":
        host_root = args.host_root or recipe.host.sysfs_root or "/"
        ok, checks = once.boot_confirm(recipe, host_root)
        if args.json:
            print_json({"ok": ok, "checks": [c.as_dict() for c in checks]})
        else:
            for c in checks:
                if c.status != Status.PASS:
                    print(f"{c.status.upper():4}  {c.id}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else ""))
            state = once.read_state(recipe)
            if ok:
                print(f"confirmed: {state['confirmed']['id']} is now the default (saved_entry)")
            else:
                failed = "; ".join(state["last_confirm"]["failed"])
                print(f"error: not confirmed, the default entry is unchanged: {failed}", file=sys.stderr)
        return 0 if ok else 1
    from lfspass.host.read import Host

    running = Host(recipe.host.sysfs_root or "/").release
    out = once.boot_status(recipe, running)
    if args.json:
        print_json(out)
    else:
        def name(d):
            return f"{d['id']} ({d['title']})" if d else "(none: grub.cfg's own default)"
        lc = out["last_confirm"]
        print(f"default:      {name(out['default'])}\nnext boot:    {name(out['next_boot']) if out['next_boot'] else '(the default)'}\n"
              f"running:      {out['running']}\n"
              f"last confirm: " + (f"{'ok' if lc['ok'] else 'FAILED'} for {lc['id']} at {lc['at']}"
                                   + ("" if lc["ok"] else f" ({'; '.join(lc['failed'])})") if lc else "(never)"))
    return 0
