"""`lfspass boot try|confirm|status`: boot a new kernel once, make it the default only after its checks pass."""
from __future__ import annotations

import argparse
import sys

from lfspass.cli.output import print_json
from lfspass.model import Status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="boot_command", metavar="ACTION", required=True)
    t = sub.add_parser("try", help="boot the newest lfspass kernel at the next boot ([boot] tries boots); the default stays")
    c = sub.add_parser("confirm", help="check the booted host; on success make the tried entry the default")
    s = sub.add_parser("status", help="default entry, next-boot entry, running release, last confirm result")
    for p in (t, c, s):
        p.add_argument("--recipe", metavar="PATH", help="the recipe (default: $LFSPASS_RECIPE, else recipes/lab.toml)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    t.add_argument("--release", metavar="REL",
                   help="the installed release to try (default: the recipe's kernel; a bundle's after `lfspass install`)")
    c.add_argument("--host-root", metavar="DIR",
                   help="the booted host, or a `doctor --save` copy of it (default: the recipe's sysfs_root)")
    c.add_argument("--at-boot", action="store_true",
                   help="as the lfspass-confirm boot script runs it: nothing tried is no error, and a kernel "
                        "that used its tries unconfirmed is marked bad")


def _release(recipe) -> str:
    from lfspass.kernel.release import kernel_release

    return kernel_release(recipe)


def run(args: argparse.Namespace) -> int:
    from lfspass.boot import once
    from lfspass.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.boot_command == "try":
        out = once.boot_try(recipe, args.release or _release(recipe))
        if args.json:
            print_json(out)
        else:
            boots = "once" if out["tries"] == 1 else f"{out['tries']} boots"
            print(f"next boot ({boots}): {out['tried']}\ndefault stays:    {out['default'] or '(grub.cfg default)'}\n"
                  f"grubenv: {out['grubenv']}\n"
                  "reboot now; if the new kernel does not come up, power-cycle the machine (HPE iLO 4: "
                  "Power Management > Server Power > Cold Boot, or `power reset` in iLO's SSH shell): "
                  f"GRUB boots the default once its {'try is' if out['tries'] == 1 else 'tries are'} used. "
                  "Once it is up, the lfspass-confirm boot script runs `lfspass boot confirm` "
                  "(or run it yourself).")
        return 0
    if args.boot_command == "confirm":
        host_root = args.host_root or recipe.host.sysfs_root or "/"
        out = once.boot_confirm(recipe, host_root, at_boot=args.at_boot)
        if args.json:
            print_json({"ok": out["ok"], "outcome": out["outcome"], "message": out["message"],
                        "checks": [c.as_dict() for c in out["checks"]]})
        else:
            for c in out["checks"]:
                if c.status != Status.PASS:
                    print(f"{c.status.upper():4}  {c.id}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else ""))
            if out["ok"]:
                print(out["message"])
            else:
                print(f"error: {out['message']}", file=sys.stderr)
        return 0 if out["ok"] else 1
    from lfspass.host.read import Host

    running = Host(recipe.host.sysfs_root or "/").release
    out = once.boot_status(recipe, running)
    if args.json:
        print_json(out)
    else:
        def name(d):
            return f"{d['id']} ({d['title']})" if d else "(none: grub.cfg's own default)"
        lc, tried = out["last_confirm"], out["tried"]
        print(f"default:      {name(out['default'])}\nnext boot:    {name(out['next_boot']) if out['next_boot'] else '(the default)'}\n"
              f"running:      {out['running']}\n"
              f"last confirm: " + (f"{'ok' if lc['ok'] else 'FAILED'} for {lc['id']} at {lc['at']}"
                                   + ("" if lc["ok"] else f" ({'; '.join(lc['failed'])})") if lc else "(never)"))
        if tried and out["tried_outcome"] == "pending":
            print(f"tried:        {tried['id']}, {out['tries_left']} of {tried.get('tries', 1)} "
                  f"{'try' if tried.get('tries', 1) == 1 else 'tries'} left")
        for b in out["bad"]:
            print(f"marked bad:   {b['id']} (used its {b['tries']} {'try' if b['tries'] == 1 else 'tries'}, {b['at']}: "
                  f"{b['why']}); `boot try` refuses it until it is rebuilt")
    return 0
