"""NVIDIA Tesla T10 (TU102GL, 10de:1e37): passed through fine in the seed on an HPE DL380 Gen9."""
from __future__ import annotations

from lfspass.api import Status, bar_check, check_hda, hookimpl, label, softdeps

PCI_ID = "10de:1e37"


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return [PCI_ID]


@hookimpl
def lfspass_device_kind(vm, device):
    # A Tesla T10 has no display outputs: its guest is reached over the serial console and ssh.
    return ["compute"]


@hookimpl
def lfspass_modprobe(recipe, device):
    # Either NVIDIA driver would bind the card at boot if it loaded before vfio-pci.
    return softdeps(device) if device is not None else None


@hookimpl
def lfspass_doctor_checks(host, recipe, device):
    """BAR1 16 GiB (fits classic OVMF) and the audio function NVIDIA's HDA quirk exposes."""
    if device is None:
        return None
    dev, checks = bar_check(host, device, 1, "t10-bar1", "Tesla T10 BAR1", lambda bar: (
        Status.PASS, f"BAR1 {bar.size >> 30} GiB fits classic OVMF's 32 GiB 64-bit window (as in the seed)", ""))
    return checks + [check_hda(host, dev, label(device))] if dev is not None else None
