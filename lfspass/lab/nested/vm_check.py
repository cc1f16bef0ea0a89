"""The nested lab's check that every device its VM passes through exists on the lab guest (L1)."""
from __future__ import annotations

from pathlib import Path

from lfspass.errors import InputError
from lfspass.recipe import Recipe


def l2_vm(recipe: Recipe):
    """The VM whose launcher L1 runs: the recipe's first [[vms]] entry."""
    if not recipe.vms:
        raise InputError(f"{recipe.path}: the nested lab runs the first [[vms]] entry's launcher, and there is none")
    return recipe.vms[0]


def check_addresses(plan, saved: Path) -> None:
    """Every address the launcher passes through must be a PCI device of L1 (its saved host)."""
    from lfspass.host.read import Host

    host = Host(saved)
    for dev in plan.devices:
        if host.pci_device(dev.address) is None:
            raise InputError(f"{plan.where}.devices: {dev.address} ({dev.id or 'device'}) is not a PCI device of "
                               f"the lab guest (L1's host saved in {saved} has "
                               f"{', '.join(sorted(host.devices)) or 'none'}); name one of those in [[devices]]")


def precheck(recipe: Recipe) -> None:
    """Before any guest boots: once L1's host is saved (host.sysfs_root), plan the VM against it."""
    from lfspass.vm.plan import build_vm_plan

    saved = Path(recipe.host.sysfs_root)
    if not (saved / "sys/bus/pci/devices").is_dir():
        return  # the first nested run: the lab boot saves it, then `vm` plans from it
    check_addresses(build_vm_plan(recipe, l2_vm(recipe)), saved)
