"""The virtual lab's stand-in GPU: QEMU's `edu` device (1234:11e8), bound to vfio-pci in a TCG guest.

Like a GPU plugin it adds a quirk argument and a CPU flag to the VM launcher of a guest that
gets the device, so the nested lab (recipes/lab-nested.toml) proves those hooks reach QEMU:
the argument adds QEMU's `pci-testdev` (1b36:0005), which the second guest must list beside
edu.  $LFSPASS_LAB_DEVICE_ARG replaces that -device value (a property QEMU rejects must make
the nested lab fail with QEMU's own message).
"""
from __future__ import annotations

import os

from lfspass.api import hookimpl

PCI_ID = "1234:11e8"
DEVICE_ARG_ENV = "LFSPASS_LAB_DEVICE_ARG"
TESTDEV = "pci-testdev"
# A property of -cpu host (KVM); under TCG the launcher runs -cpu max and leaves host flags out.
CPU_FLAG = "l3-cache=on"


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return [PCI_ID]


@hookimpl
def lfspass_qemu_device_args(vm, device):
    return ["-device", os.environ.get(DEVICE_ARG_ENV) or TESTDEV]


@hookimpl
def lfspass_cpu_flags(vm, device):
    return [CPU_FLAG] if device is not None else None
