"""Core plugin: what every passthrough host needs (IOMMU parameters, the VFIO Kconfig set, tun).

It claims no PCI id, so its device hooks see every device; blocking it
(LFSPASS_DISABLE_PLUGINS=core) is allowed for experiments but leaves the kernel without VFIO.
"""
from __future__ import annotations

from lfspass.api import KconfigError, Request, hookimpl

# (symbol, value, optional).  "{vfio}" becomes m (module) or y (builtin); the
# rest are bool.  Optional = the symbol exists only in some
# kernel versions (docs/explanation/kconfig.md#symbols-that-come-and-go), so a tree
# without it is skipped with a note.
_COMMON = (
    ("PCI", "y", False),
    ("PCI_MSI", "y", False),
    ("ACPI", "y", False),
    ("IOMMU_SUPPORT", "y", False),
    ("VFIO", "{vfio}", False),
    ("VFIO_GROUP", "y", True),        # 6.6+: /dev/vfio/N group interface
    ("VFIO_CONTAINER", "y", True),    # 6.2+: /dev/vfio/vfio container
    ("VFIO_IOMMU_TYPE1", "{vfio}", False),  # no prompt: selected by VFIO / VFIO_CONTAINER
    ("VFIO_PCI", "{vfio}", False),
)
# vfio_backend = "iommufd": /dev/iommu (IOMMUFD, 6.2+) and the per-device cdev /dev/vfio/devices/vfioN
# (VFIO_DEVICE_CDEV, 6.6+); VFIO_GROUP and the container stay on, so the group path keeps working.
# IOMMUFD takes VFIO's value: VFIO "depends on IOMMUFD || !IOMMUFD", so VFIO=y refuses IOMMUFD=m.
_IOMMUFD = (
    ("IOMMUFD", "{vfio}", True),
    ("VFIO_DEVICE_CDEV", "y", True),
)
_MODULE_ONLY = (
    ("MODULES", "y", False),          # vfio as modules needs module support (tinyconfig has none)
)
_VENDOR = {
    "intel": (
        ("INTEL_IOMMU", "y", False),
        ("INTEL_IOMMU_SVM", "y", False),  # cheap: depends only on X86_64
        ("IRQ_REMAP", "y", False),
    ),
    "amd": (
        ("AMD_IOMMU", "y", False),
        ("IRQ_REMAP", "y", False),
    ),
}
# KVM is not in the core set: the plan asks for it separately (kvm_requests) because a
# host may run QEMU under TCG.  From tinyconfig it needs only VIRTUALIZATION and
# HIGH_RES_TIMERS besides itself, so it is cheap when wanted.
_KVM = {
    "intel": (("VIRTUALIZATION", "y", False), ("HIGH_RES_TIMERS", "y", False),
              ("KVM", "{vfio}", False), ("KVM_INTEL", "{vfio}", False)),
    "amd": (("VIRTUALIZATION", "y", False), ("HIGH_RES_TIMERS", "y", False),
            ("KVM", "{vfio}", False), ("KVM_AMD", "{vfio}", False)),
}
_VFIO_VALUE = {"module": "m", "builtin": "y"}


def _expand(rows, vfio: str, source: str) -> list[Request]:
    value = _VFIO_VALUE[vfio]
    return [Request(sym, val.replace("{vfio}", value), source, opt) for sym, val, opt in rows]


def _check(vendor: str, vfio: str) -> None:
    if vendor not in _VENDOR:
        raise KconfigError(f"CPU vendor {vendor!r}: expected one of {', '.join(_VENDOR)}")
    if vfio not in _VFIO_VALUE:
        raise KconfigError(f"vfio {vfio!r}: expected one of {', '.join(_VFIO_VALUE)}")


def core_requests(vendor: str, vfio: str) -> list[Request]:
    """IOMMU + VFIO requests for ``vendor`` ('intel'|'amd'), VFIO as 'module' or 'builtin'."""
    _check(vendor, vfio)
    rows = _COMMON + _VENDOR[vendor] + (_MODULE_ONLY if vfio == "module" else ())
    return _expand(rows, vfio, "core")


def iommufd_requests(vfio: str) -> list[Request]:
    """The iommufd/cdev profile ([kernel] vfio_backend = "iommufd"); trees older than a symbol skip it."""
    _check("intel", vfio)
    return _expand(_IOMMUFD, vfio, "vfio_backend")


def kvm_requests(vendor: str, kvm: str = "module") -> list[Request]:
    """KVM for ``vendor``, as 'module' or 'builtin' (with the two symbols it needs)."""
    _check(vendor, kvm)
    rows = _KVM[vendor] + (_MODULE_ONLY if kvm == "module" else ())
    return _expand(rows, kvm, "kvm")


@hookimpl
def lfspass_pci_ids() -> list[str]:
    return []  # claims nothing, so it also sees every device


@hookimpl
def lfspass_kconfig_requests(recipe, device):
    if device is not None:
        return None
    extra = iommufd_requests(recipe.kernel.vfio) if recipe.kernel.vfio_backend == "iommufd" else []
    return core_requests(recipe.host.cpu_vendor, recipe.kernel.vfio) + extra


@hookimpl
def lfspass_cmdline(recipe, device):
    if device is not None:
        return None
    params = []
    # AMD's IOMMU is on by default where the firmware has an IVRS table;
    # `amd_iommu=on` is not a valid value (docs/explanation/kernel-parameters.md).
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
