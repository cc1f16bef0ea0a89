"""Helpers GPU plugins share: which host drivers compete with vfio-pci, and BAR checks."""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from lfspass.model import Status

# Host drivers that would grab a device before vfio-pci, by PCI vendor id.
DRIVERS_BY_VENDOR = {
    "10de": ("nouveau", "nvidia"),          # NVIDIA
    "1002": ("amdgpu", "radeon"),           # AMD/ATI
    "8086": ("i915",),                      # Intel graphics
}
AUDIO_DRIVERS = ("snd_hda_intel",)


def host_drivers(device: Any) -> tuple[str, ...]:
    """Drivers that must wait for vfio-pci: HD-audio by class, GPUs by vendor."""
    if device.pci_class.startswith("0x0403"):
        return AUDIO_DRIVERS
    if device.pci_class and not device.pci_class.startswith("0x03"):
        return ()  # a known non-display class: no GPU driver competes for it
    return DRIVERS_BY_VENDOR.get(device.vendor, ())


def softdeps(device: Any) -> list[str]:
    """``softdep <driver> pre: vfio-pci`` for each competing driver, so vfio-pci binds first."""
    return [f"softdep {drv} pre: vfio-pci" for drv in host_drivers(device)]


def bar_check(host: Any, device: Any, index: int, check_id: str, title: str,
              judge: Callable[[Any], tuple[Status, str, str]]) -> tuple[Any, list]:
    """(host PciDevice or None, [Check]) for BAR ``index`` of a recipe device.

    An unreadable BAR is ``unknown``, an unassigned one fails with the firmware fix;
    otherwise ``judge(bar)`` gives (status, detail, fix).
    """
    from lfspass.model import Check
    from lfspass.doctor.devices import HPE_BAR_FIX, label, locate

    dev, _ = locate(host, device)
    if dev is None:
        return None, []
    check_id = f"{check_id}[{label(device)}]"
    bar = next((b for b in dev.bars or [] if b.index == index), None)
    if bar is None:
        return dev, [Check(check_id, Status.UNKNOWN, title, f"BAR{index} not readable from the resource file",
                           "re-save the host with `lfspass doctor --save`")]
    if bar.unassigned:
        return dev, [Check(check_id, Status.FAIL, title, f"BAR{index} ({bar.size >> 30} GiB) is unassigned on the host",
                           HPE_BAR_FIX)]
    status, detail, fix = judge(bar)
    return dev, [Check(check_id, status, title, detail, fix)]
