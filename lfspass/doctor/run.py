"""`lfspass doctor`'s checks on the host as a whole, and the run that gathers all checks.

Each check says pass / warn / fail / unknown with a one-line detail and a one-line fix.
``unknown`` means doctor could not read what it needs (a file missing from a saved
root, a garbled attribute, dmesg not permitted): it never guesses.  Device checks live
in :mod:`lfspass.doctor.devices`; plugins add more through ``lfspass_doctor_checks``.
"""
from __future__ import annotations

import re

from typing import Any

from lfspass.host.read import Host
from lfspass.model import Check, Status

STATUSES = tuple(Status)


def check_cpu(host: Host, recipe: Any = None) -> Check:
    flags = host.cpu_flags
    title = "CPU virtualization (VT-x / AMD-V)"
    if flags is None:
        return Check("cpu-virt", Status.UNKNOWN, title, "proc/cpuinfo is missing or has no flags line",
                     "run doctor on the host itself, or save the host with `lfspass doctor --save`")
    found = sorted(flags & {"vmx", "svm"})
    if not found:
        return Check("cpu-virt", Status.FAIL, title, "neither vmx nor svm in the CPU flags: KVM cannot run",
                     "enable Intel VT-x (Virtualization Technology) or AMD SVM in the firmware setup; "
                     "inside a VM, enable nested virtualization on its host")
    want = {"intel": "vmx", "amd": "svm"}.get(getattr(getattr(recipe, "host", None), "cpu_vendor", ""), "")
    if want and want not in found:
        return Check("cpu-virt", Status.WARN, title, f"CPU has {found[0]} but the recipe says cpu_vendor = "
                     f"'{recipe.host.cpu_vendor}'", "set [host] cpu_vendor to match this CPU (it picks IOMMU options)")
    return Check("cpu-virt", Status.PASS, title, f"{found[0]} present")


def check_iommu(host: Host) -> Check:
    title = "IOMMU enabled"
    groups, log = host.iommu_groups, host.kernel_log
    line = _first(log, r"DMAR: IOMMU enabled|AMD-Vi: (?:Found IOMMU|IOMMU performance counters)|AMD-Vi: Interrupt remapping enabled")
    garbled = getattr(host, "garbled_groups", [])
    if groups and garbled:
        return Check("iommu", Status.WARN, title, f"{len(groups)} IOMMU groups, and entries that are not group numbers in "
                     f"sys/kernel/iommu_groups: {', '.join(ascii(g) for g in garbled[:5])} (garbled; skipped)",
                     "read the live host, or re-save it with `lfspass doctor --save`")
    if groups:
        return Check("iommu", Status.PASS, title, f"{len(groups)} IOMMU groups" + (f"; log: {line}" if line else ""))
    fix = ("enable VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup, build the kernel with INTEL_IOMMU "
           "(or AMD_IOMMU), and boot with intel_iommu=on on Intel (AMD needs no parameter)")
    if log is None:
        return Check("iommu", Status.FAIL, title, "no IOMMU groups under sys/kernel/iommu_groups (kernel log not readable)", fix)
    if _first(log, r"ACPI: DMAR|DMAR: Host address width"):
        return Check("iommu", Status.FAIL, title, "the firmware has a DMAR table but the kernel did not enable the IOMMU "
                     "(no 'DMAR: IOMMU enabled', no IOMMU groups)",
                     "boot with intel_iommu=on, or build with INTEL_IOMMU_DEFAULT_ON=y")
    if _first(log, r"ACPI: IVRS|AMD-Vi"):
        return Check("iommu", Status.FAIL, title, "the firmware has an IVRS table but no IOMMU groups exist",
                     "build the kernel with AMD_IOMMU=y and drop amd_iommu=off / iommu=off from the command line")
    return Check("iommu", Status.FAIL, title, "no IOMMU groups and no DMAR/AMD-Vi lines in the kernel log: the IOMMU is off", fix)


def check_irq_remap(host: Host) -> Check:
    title = "interrupt remapping"
    log = host.kernel_log
    unsafe = "vfio_iommu_type1.allow_unsafe_interrupts=1" in (host.cmdline or "").split()
    if log is None:
        return Check("irq-remap", Status.UNKNOWN, title, "kernel log not readable (dmesg not permitted, or no dmesg.txt)",
                     "run doctor as root, or `sysctl kernel.dmesg_restrict=0`")
    line = _first(log, r"DMAR-IR: Enabled IRQ remapping|AMD-Vi: Interrupt remapping enabled")
    if line:
        return Check("irq-remap", Status.PASS, title, line)
    fix = ("enable x2APIC / interrupt remapping in the firmware and build with IRQ_REMAP=y; "
           "vfio_iommu_type1.allow_unsafe_interrupts=1 works but lets a guest forge interrupts")
    if unsafe:
        return Check("irq-remap", Status.WARN, title, "no interrupt remapping; allow_unsafe_interrupts=1 is set (insecure)", fix)
    return Check("irq-remap", Status.WARN, title, "no 'Enabled IRQ remapping' line in the kernel log: vfio refuses devices "
                 "without allow_unsafe_interrupts", fix)


def check_cmdline(host: Host) -> list[Check]:
    """Kernel parameters against the kernel config and the log (docs/explanation/kernel-parameters.md)."""
    cmd, cfg, log = host.cmdline, host.kernel_config, host.kernel_log or ""
    title = "kernel command line"
    if cmd is None:
        return [Check("cmdline", Status.UNKNOWN, title, "proc/cmdline is missing", "save the host with `lfspass doctor --save`")]
    params = {name: value for name, _, value in (p.partition("=") for p in cmd.split())}
    out = []
    if params.get("intel_iommu") == "on" and cfg and cfg.get("CONFIG_INTEL_IOMMU_DEFAULT_ON") == "y":
        out.append(Check("cmdline-intel-iommu", Status.WARN, title,
                         "intel_iommu=on is redundant: the kernel is built with INTEL_IOMMU_DEFAULT_ON=y",
                         "harmless; drop intel_iommu=on from the GRUB entry to keep the line honest"))
    if params.get("amd_iommu") == "on":
        out.append(Check("cmdline-amd-iommu", Status.WARN, title,
                         "amd_iommu=on is not a valid value (the kernel logs \"AMD-Vi: Unknown option - 'on'\")",
                         "drop it: the AMD IOMMU is on by default when the firmware has an IVRS table"))
    if "pcie_acs_override" in params:
        ignored = _first(log, r'Unknown kernel command line parameters ".*pcie_acs_override')
        if ignored or not log:
            detail = ("pcie_acs_override= is ignored: the kernel lists it as an unknown parameter (no ACS override patch)"
                      if ignored else "pcie_acs_override= needs the out-of-tree ACS override patch; mainline ignores it")
            out.append(Check("cmdline-acs-override", Status.WARN, title, detail,
                             "drop pcie_acs_override=, or build a kernel with the ACS override patch "
                             "(it splits groups by pretending isolation the hardware lacks)"))
    if params.get("iommu") == "pt":
        out.append(Check("cmdline-iommu-pt", Status.PASS, title,
                         "iommu=pt: host devices get identity mapping (faster, weaker DMA hardening)"))
    return out or [Check("cmdline", Status.PASS, title, "no conflicting IOMMU parameters")]


def check_vfio_modules(host: Host) -> Check:
    title = "vfio modules in the installed kernel"
    rel = host.release
    builtin, loadable, cfg = host.modules_builtin, host.modules_loadable, host.kernel_config
    need = ("vfio", "vfio_iommu_type1", "vfio_pci")
    if builtin is not None or loadable is not None:
        have = (builtin or set()) | (loadable or set())
        missing = [m for m in need if m not in have]
        where = f"lib/modules/{rel}/modules.dep + modules.builtin"
    elif cfg is not None:
        keys = {"vfio": "CONFIG_VFIO", "vfio_iommu_type1": "CONFIG_VFIO_IOMMU_TYPE1", "vfio_pci": "CONFIG_VFIO_PCI"}
        missing = [m for m in need if cfg.get(keys[m]) not in ("y", "m") and not (m == "vfio_iommu_type1" and "CONFIG_VFIO_CONTAINER" not in cfg and cfg.get("CONFIG_VFIO") in ("y", "m"))]
        where = getattr(host, "kernel_config_source", "kernel config")
    else:
        return Check("vfio-modules", Status.UNKNOWN, title,
                     f"kernel {rel or '?'}: no lib/modules/<release>/modules.dep and no boot/config-<release>",
                     "install the kernel's modules (make modules_install) or keep its .config in /boot")
    if missing:
        return Check("vfio-modules", Status.FAIL, title, f"kernel {rel}: {', '.join(missing)} missing ({where})",
                     "build with VFIO=m, VFIO_PCI=m (`lfspass kconfig`), then make modules_install")
    return Check("vfio-modules", Status.PASS, title, f"kernel {rel}: {', '.join(need)} present ({where})")


def _first(text: str | None, pattern: str) -> str | None:
    """The first log line matching ``pattern``, without its timestamp."""
    m = re.search(rf"^.*(?:{pattern}).*$", text or "", re.M)
    return re.sub(r"^\[[^\]]*\]\s*", "", m.group(0)).strip() if m else None


def host_checks(host: Host, recipe: Any = None) -> list[Check]:
    return [check_cpu(host, recipe), check_iommu(host), check_irq_remap(host), *check_cmdline(host),
            check_vfio_modules(host)]


def run_doctor(host: Host, recipe: Any = None, pm: Any = None) -> list[Check]:
    """Every check: host-wide, per recipe device (or per vfio-pci device), then plugins'."""
    from lfspass.doctor.devices import device_checks, devices_to_check, plan_device

    from lfspass.doctor.cdev import cdev_checks

    checks = host_checks(host, recipe)
    specs = devices_to_check(host, recipe)
    runtime = _bound_at_vm_start(recipe, specs)
    for spec in specs:
        checks.extend(device_checks(host, spec, runtime=spec in runtime))
    checks.extend(cdev_checks(host, recipe, specs))
    from lfspass.doctor.tuning import tuning_checks

    checks.extend(tuning_checks(host, recipe))
    if pm is not None:
        from lfspass.plugins import call_device, call_host

        checks.extend(_valid(call_host(pm, "lfspass_doctor_checks", host=host, recipe=recipe)))
        for spec in specs:
            checks.extend(_valid(call_device(pm, "lfspass_doctor_checks", plan_device(host, spec, pm),
                                             host=host, recipe=recipe)))
    return checks


def _bound_at_vm_start(recipe: Any, specs: list) -> list:
    """The specs only VMs with bind = "runtime" use: they stay on host drivers until such a VM starts."""
    if recipe is None or not getattr(recipe, "vms", None):
        return []
    from lfspass.plan import Device, runtime_only

    devices = {Device(id=s.id or "", address=s.address or ""): s for s in specs}
    return [devices[d] for d in runtime_only(recipe, list(devices))]


def _valid(items: list) -> list[Check]:
    # A plugin returning something else is a plugin bug; say so as a check, not a traceback.
    return [c if isinstance(c, Check) else
            Check("plugin", Status.UNKNOWN, "plugin check", f"a plugin returned {c!r}, not a doctor.Check", "fix the plugin")
            for c in items]


def exit_status(checks: list[Check]) -> int:
    return 1 if any(c.status == Status.FAIL for c in checks) else 0
