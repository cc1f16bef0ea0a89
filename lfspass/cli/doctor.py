"""`lfspass doctor`: diagnose a host (live or saved) for GPU passthrough; exit 1 when a check fails."""
from __future__ import annotations

import argparse
import sys

from lfspass.cli.output import print_json
from lfspass.doctor.run import exit_status, run_doctor
from lfspass.model import Check, Status
from lfspass.host.read import Host

MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "unknown": "UNKN"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host-root", metavar="DIR",
                        help="folder standing for / (a `--save` copy); default: the recipe's [host] sysfs_root, else /")
    parser.add_argument("--recipe", metavar="PATH",
                        help="recipe whose [[devices]] to check; without one, devices bound to vfio-pci are checked")
    parser.add_argument("--json", action="store_true", help="print every check as JSON")
    parser.add_argument("--save", metavar="DIR",
                        help="also copy what doctor reads into DIR (new folder) for a bug report")
    parser.add_argument("--guest", metavar="VM",
                        help="print what the recipe's VM saw of its PCI devices at its check boot (installed.json)")


def render(host: Host, checks: list[Check]) -> str:
    width = max((len(c.id) for c in checks), default=10)
    lines = [f"lfspass doctor: host {host.root}" + (f", kernel {host.release}" if host.release else "")]
    for c in checks:
        lines.append(f"{MARK.get(c.status, c.status)}  {c.id:<{width}}  {c.detail}")
        if c.fix and c.status != Status.PASS:
            lines.append(f"      {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in MARK}
    lines.append(f"{counts['fail']} failed, {counts['warn']} warnings, {counts['unknown']} unknown, {counts['pass']} passed")
    return "\n".join(lines) + "\n"


def guest(args: argparse.Namespace) -> int:
    """``doctor --guest VM``: the guest-side report lfspass recorded; exit 1 when there is none."""
    import json

    from lfspass.errors import CheckFailed, InputError, VmError
    from lfspass.recipe import load_recipe
    from lfspass.vm.image.guest_check import render as render_guest
    from lfspass.vm.install import marker_path
    from lfspass.vm.plan import build_vm_plan

    if not args.recipe:
        raise InputError(f"doctor --guest {args.guest}: the VM is one of a recipe's; add --recipe PATH")
    recipe = load_recipe(args.recipe)
    vm = next((v for v in recipe.vms if v.name == args.guest), None)
    if vm is None:
        raise VmError(f"{recipe.path}: no VM named {args.guest!r}; its VMs: {', '.join(v.name for v in recipe.vms) or 'none'}")
    marker = marker_path(build_vm_plan(recipe, vm))
    try:
        info = json.loads(marker.read_text())
    except FileNotFoundError:
        raise CheckFailed(f"{args.guest}: not installed yet (no {marker}); run `doit vm:install:{args.guest}`") from None
    except (OSError, ValueError) as exc:
        raise CheckFailed(f"{marker}: cannot be read ({exc}); run `doit vm:install:{args.guest}` again") from None
    report = info.get("guest_check")
    if args.json:
        print_json({"vm": args.guest, "installed": str(marker), "finished": info.get("finished"), "guest_check": report})
    else:
        sys.stdout.write(render_guest(args.guest, report, info.get("finished", "")))
    return 0 if report is not None else 1


def run(args: argparse.Namespace) -> int:
    if args.guest:
        return guest(args)
    recipe = None
    if args.recipe:
        from lfspass.recipe import load_recipe

        recipe = load_recipe(args.recipe)
    host = Host(args.host_root or (recipe.host.sysfs_root if recipe is not None else "/"))
    from lfspass.plugins import get_plugin_manager

    if args.save:
        from lfspass.host.save import check_dest, folder_size, save_host

        check_dest(args.save)   # refuse a bad --save before spending time on checks
    checks = run_doctor(host, recipe, get_plugin_manager())
    if args.save:
        saved = save_host(host, args.save)
        files, size = folder_size(saved)
        print(f"saved {files} files ({size // 1024} KiB) to {saved}; read it back with --host-root {saved}",
              file=sys.stderr)
    if args.json:
        print_json({"host_root": str(host.root), "kernel": host.release, "status": "fail" if exit_status(checks) else "ok",
                    "checks": [c.as_dict() for c in checks]})
    else:
        sys.stdout.write(render(host, checks))
    return exit_status(checks)
