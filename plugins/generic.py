"""Fallback plugin: any PCI id no other plugin claims, handled by vendor and class."""
from __future__ import annotations

from lfspass.api import hookimpl, softdeps


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return ["*"]


@hookimpl
def lfspass_modprobe(recipe, device):
    return softdeps(device) if device is not None else None
