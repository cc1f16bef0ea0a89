"""NVIDIA Tesla P10 (GP102GL, 10de:1b39): a 32 GiB BAR1 that needs a large 64-bit MMIO window."""
from __future__ import annotations

from lfspass.api import HPE_BAR_FIX, OVMF_FIX, Check, Status, bar_check, check_hda, hookimpl, label, softdeps

PCI_ID = "10de:1b39"
# BAR1 is 32 GiB (+32 MiB BAR3): OVMF's classic 32 GiB 64-bit window cannot hold it,
# which is why the seed's guest never initialised.  64 GiB leaves room for both.
MMIO64_MB = 65536


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return [PCI_ID]


@hookimpl
def lfspass_device_kind(vm, device):
    # A Tesla P10 has no display outputs: its guest is reached over the serial console and ssh.
    return ["compute"]


@hookimpl
def lfspass_modprobe(recipe, device):
    return softdeps(device) if device is not None else None


@hookimpl
def lfspass_cpu_flags(vm, device):
    # Let the guest see the host's physical address width so OVMF can place the BAR high.
    return ["host-phys-bits=on"] if device is not None else None


@hookimpl
def lfspass_qemu_device_args(vm, device):
    return ["-fw_cfg", f"name=opt/ovmf/X-PciMmio64Mb,string={MMIO64_MB}"]


@hookimpl
def lfspass_doctor_checks(host, recipe, device):
    """BAR1 32 GiB against the guest's 64-bit window, an unassigned BAR1, HPE's RMRR refusal, the HDA function."""
    if device is None:
        return None
    dev, checks = bar_check(host, device, 1, "p10-bar1", "Tesla P10 large BAR1", lambda bar: (
        Status.WARN, f"BAR1 is {bar.size >> 30} GiB: the guest needs a 64-bit MMIO window above 32 GiB "
                "(classic OVMF has 32 GiB: the seed's guest never initialised)",
        OVMF_FIX + "; on HPE Gen9 also " + HPE_BAR_FIX))
    if dev is None:
        return None
    if checks[0].status == Status.FAIL:  # unassigned on the host: the firmware first, then OVMF
        checks[0].fix = HPE_BAR_FIX + "; then " + OVMF_FIX
    lab = label(device)
    log = host.kernel_log
    if log is not None and f"{dev.address}: DMAR: Device is ineligible for IOMMU domain attach" in log:
        checks.append(Check(f"p10-rmrr[{lab}]", Status.FAIL, "HPE RMRR", "the kernel refused the card: 'Device is ineligible "
                            "for IOMMU domain attach due to platform RMRR requirement'",
                            "exclude the slot from HPE shared memory with conrep (conrep -l -x conrep_rmrds.xml with "
                            "<RMRDS_SlotN>Endpoints_Excluded</RMRDS_SlotN>), then reboot"))
    checks.append(check_hda(host, dev, lab))
    return checks
