"""The virtual lab's stand-in GPU: QEMU's `edu` device (1234:11e8), bound to vfio-pci in a TCG guest."""
from __future__ import annotations

from lfspass.api import hookimpl

PCI_ID = "1234:11e8"


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return [PCI_ID]
