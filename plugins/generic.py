"""Fallback plugin: any PCI id no other plugin claims, handled by vendor and class."""
from __future__ import annotations

from lfspass import hookimpl

# Host drivers that would grab a device before vfio-pci, by PCI vendor id.
DRIVERS_BY_VENDOR = {
    "10de": ("nouveau", "nvidia"),          # NVIDIA
    "1002": ("amdgpu", "radeon"),           # AMD/ATI
    "8086": ("i915",),                      # Intel graphics
}
AUDIO_DRIVERS = ("snd_hda_intel",)


def host_drivers(device) -> tuple[str, ...]:
    """Drivers that must wait for vfio-pci: HD-audio by class, GPUs by vendor."""
    if device.pci_class.startswith("0x0403"):
        return AUDIO_DRIVERS
    if device.pci_class and not device.pci_class.startswith("0x03"):
        return ()  # a known non-display class: no GPU driver competes for it
    return DRIVERS_BY_VENDOR.get(device.vendor, ())


def softdeps(device) -> list[str]:
    return [f"softdep {drv} pre: vfio-pci" for drv in host_drivers(device)]


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return ["*"]


@hookimpl
def lfspass_modprobe(recipe, device):
    return softdeps(device) if device is not None else None
