"""Host-wide hooks every host needs: IOMMU parameters, the VFIO Kconfig set, tun."""
from __future__ import annotations

from . import hookimpl


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return []  # claims nothing, so it also sees every device


@hookimpl
def lfspass_kconfig_requests(recipe, device):
    if device is not None:
        return None
    from .kconfig_sets import core_requests

    return core_requests(recipe.host.cpu_vendor, recipe.kernel.vfio)


@hookimpl
def lfspass_cmdline(recipe, device):
    if device is not None:
        return None
    params = []
    # AMD's IOMMU is on by default where the firmware has an IVRS table;
    # `amd_iommu=on` is not a valid value (FIELD-NOTES §3).
    if recipe.host.cpu_vendor == "intel":
        params.append("intel_iommu=on")
    if recipe.boot.iommu_pt:
        params.append("iommu=pt")
    return params


@hookimpl
def lfspass_autoload(recipe, device):
    if device is not None:
        return None
    # tap/bridge networking needs /dev/net/tun before the first VM starts.
    return ["tun"] if any(vm.network == "bridge" for vm in recipe.vms) else None
