"""NVIDIA Tesla P10 (GP102GL, 10de:1b39): a 32 GiB BAR1 that needs a large 64-bit MMIO window."""
from __future__ import annotations

from lfspass import hookimpl

PCI_ID = "10de:1b39"
# BAR1 is 32 GiB (+32 MiB BAR3): OVMF's classic 32 GiB 64-bit window cannot hold it,
# which is why the seed's guest never initialised.  64 GiB leaves room for both.
MMIO64_MB = 65536


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return [PCI_ID]


@hookimpl
def lfspass_modprobe(recipe, device):
    if device is None:
        return None
    return ["softdep nouveau pre: vfio-pci", "softdep nvidia pre: vfio-pci"]


@hookimpl
def lfspass_cpu_flags(vm, device):
    # Let the guest see the host's physical address width so OVMF can place the BAR high.
    return ["host-phys-bits=on"] if device is not None else None


@hookimpl
def lfspass_qemu_device_args(vm, device):
    return ["-fw_cfg", f"name=opt/ovmf/X-PciMmio64Mb,string={MMIO64_MB}"]
