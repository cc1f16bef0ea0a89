"""The ``lfspass`` command: dispatches sub-commands, turns LfspassError into one line."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import typing
from collections.abc import Callable

from lfspass import __version__
from lfspass.errors import LfspassError

# name -> (module, one-line help).  Each module provides
#   add_arguments(parser: argparse.ArgumentParser) -> None
#   run(args: argparse.Namespace) -> int
# Modules are imported only when their command runs, so `lfspass plugins` never pays
# for kconfiglib or requests.
COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": ("lfspass.cli.plugins", "list loaded GPU plugins and the PCI ids each claims"),
    "kconfig": ("lfspass.cli.kconfig", "apply Kconfig requests to a .config and explain refusals"),
    "groups": ("lfspass.cli.groups", "list IOMMU groups and whether each can be passed through"),
    "doctor": ("lfspass.cli.doctor", "diagnose a host (live or saved) for GPU passthrough"),
    "fetch": ("lfspass.cli.fetch", "download a file and verify its checksum (and signature)"),
    "boot": ("lfspass.cli.boot", "boot a new kernel once (try), make it the default after its checks (confirm), status"),
    "bind": ("lfspass.cli.bind", "move a device's whole IOMMU group to vfio-pci now, recording its drivers"),
    "release": ("lfspass.cli.bind", "give devices lfspass bound back to the drivers recorded at bind"),
    "bundle": ("lfspass.cli.bundle", "pack the installed kernel into one verified file for other hosts"),
    "install": ("lfspass.cli.install", "install a kernel bundle (verified) with its grub and vfio files"),
    "rollback": ("lfspass.cli.rollback", "undo the host files lfspass wrote in a run (and later runs); --list shows runs"),
}


class Parser(argparse.ArgumentParser):
    """argparse whose own errors are one `error:` line (exit 2) like every other bad input."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())}; see {self.prog} --help\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` the one command's (the others' modules are not imported)."""
    parser = Parser(prog="lfspass", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lfspass {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue  # a room not built yet stays out of the CLI rather than half-there
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    named = words[0] if words and words[0] in COMMANDS else None   # `lfspass kconfig ...` imports one module
    args = build_parser(named).parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "_run", None)
    if run is None:
        print(f"error: no command given; one of: {', '.join(COMMANDS)} (see lfspass --help)", file=sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except LfspassError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `lfspass groups | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk or a file outside what the command checks: a failed run, said once
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; check the path and free space, then run again", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> typing.NoReturn:
    """The console script and ``python -m lfspass``: main(), its output flushed, then exit at
    once.  Tearing the interpreter down frees every object one by one (a kernel tree's 18,000
    scanned symbols take ~40 ms), and nothing is left to do: files are closed, threads joined."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe (`lfspass groups | head`)
            pass
    os._exit(code)
