"""NVIDIA Tesla T10 (TU102GL, 10de:1e37): passed through fine in the seed on an HPE DL380 Gen9."""
from __future__ import annotations

from lfspass import hookimpl

PCI_ID = "10de:1e37"


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return [PCI_ID]


@hookimpl
def lfspass_modprobe(recipe, device):
    if device is None:
        return None
    # Either NVIDIA driver would bind the card at boot if it loaded before vfio-pci.
    return ["softdep nouveau pre: vfio-pci", "softdep nvidia pre: vfio-pci"]
