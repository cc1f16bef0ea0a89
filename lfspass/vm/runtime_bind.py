"""The launcher part of a VM with bind = "runtime": `lfspass bind` before QEMU, `lfspass release` after it.

QEMU runs in the foreground (the serial console and monitor stay on the terminal), so the
shell waits for it and a trapped signal runs only once QEMU has gone: the devices are never
given back while QEMU still has them.  HUP, INT and TERM end the script through ``exit``,
which runs the EXIT trap; the trap releases once.  A SIGKILL of the script cannot be
trapped: then `lfspass release` (or `lfspass rollback`) by hand, as the header says.
"""
from __future__ import annotations

import shlex
import sys

from lfspass.vm.plan import VmPlan

SIGNALS = (("HUP", 129), ("INT", 130), ("TERM", 143))   # 128 + the signal's number, as sh reports it


def lfspass_argv() -> list[str]:
    """How the launcher runs lfspass: the interpreter that wrote it, so the same install answers."""
    return [sys.executable, "-m", "lfspass"]


def wanted(plan: VmPlan) -> list[str]:
    """The VM's own devices; bind takes the rest of their IOMMU groups itself, by its rules."""
    return [d.address for d in plan.devices if not d.companion_of]


def comments(plan: VmPlan) -> list[str]:
    devices = " ".join(wanted(plan))
    return [f"# bind = \"runtime\": `lfspass bind` hands {devices} (and the rest of their IOMMU groups) to "
            "vfio-pci before QEMU starts; when QEMU exits (also on Ctrl-C, HUP, TERM) `lfspass release` gives "
            "them back to the drivers recorded at bind.",
            f"# If this script is killed (SIGKILL), give them back by hand: lfspass release --recipe "
            f"{plan.recipe.path.resolve()} {devices}"]


def wrap(plan: VmPlan, qemu: str) -> str:
    """The script body around ``qemu`` (the quoted QEMU command, without exec)."""
    call = " ".join(shlex.quote(a) for a in lfspass_argv())
    recipe = shlex.quote(str(plan.recipe.path.resolve()))
    devices = " ".join(shlex.quote(a) for a in wanted(plan))
    name = shlex.quote(f"{plan.name}.sh")
    lines = ["set -u",
             f"{call} bind --recipe {recipe} {devices} || exit",
             "released=",
             "release() {",
             '    [ -n "$released" ] && return',
             "    released=1",
             f"    {call} release --recorded --recipe {recipe} {devices} ||",
             f"        echo {name}': lfspass release failed (its error is above); the devices may still be on "
             "vfio-pci' >&2",
             "}",
             "trap release EXIT",
             *[f"trap 'exit {code}' {sig}" for sig, code in SIGNALS],
             qemu + ' "$@"']
    return "\n".join(lines) + "\n"
