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


@hookimpl
def lfspass_doctor_checks(host, recipe, device):
    """BAR1 16 GiB (fits classic OVMF) and the audio function NVIDIA's HDA quirk exposes."""
    if device is None:
        return None
    from lfspass.doctor import Check
    from lfspass.doctor_devices import HPE_BAR_FIX, check_hda, label, locate

    dev, _ = locate(host, device)
    if dev is None:
        return None
    lab = label(device)
    bar1 = next((b for b in dev.bars or [] if b.index == 1), None)
    if bar1 is None:
        bar = Check(f"t10-bar1[{lab}]", "unknown", "Tesla T10 BAR1", "BAR1 not readable from the resource file",
                    "re-save the host with `lfspass doctor --save`")
    elif bar1.unassigned:
        bar = Check(f"t10-bar1[{lab}]", "fail", "Tesla T10 BAR1", f"BAR1 ({bar1.size >> 30} GiB) is unassigned", HPE_BAR_FIX)
    else:
        bar = Check(f"t10-bar1[{lab}]", "pass", "Tesla T10 BAR1",
                    f"BAR1 {bar1.size >> 30} GiB fits classic OVMF's 32 GiB 64-bit window (as in the seed)")
    return [bar, check_hda(host, dev, lab)]
