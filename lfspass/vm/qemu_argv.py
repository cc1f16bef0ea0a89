"""VmPlan -> QEMU argv (a list, never a shell string) for running, installing and the VNC install."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lfspass.plan import Device
from lfspass.vm.iommufd import OBJECT_ID
from lfspass.vm.plan import VmPlan
from lfspass.host.placement import BACKEND_ID, backend_args, launch_prefix

QEMU = "qemu-system-x86_64"


def opt(value: str | Path) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled, or QEMU splits there."""
    return str(value).replace(",", ",,")


@dataclass
class Boot:
    """How this start differs from a plain run (installer kernel, CD, serial file, preseed relay)."""

    kernel: Path | None = None
    initrd: Path | None = None
    append: list[str] = field(default_factory=list)
    cdrom: Path | None = None
    serial_log: Path | None = None      # None = serial console + monitor on stdio
    guestfwd: str = ""                   # e.g. tcp:10.0.2.100:80-cmd:/path/relay
    passthrough: bool = True             # installs leave the cards alone
    no_reboot: bool = False


def _cpu(plan: VmPlan) -> str:
    if plan.accel == "tcg":
        # `host` needs KVM; plugin flags (host-phys-bits) describe the host CPU, so they stay out.
        return "max"
    return ",".join(["host", *plan.cpu_flags])


def _network(plan: VmPlan, boot: Boot) -> list[str]:
    vm = plan.vm
    if vm.network == "none" and not boot.guestfwd:
        return []
    if vm.network == "bridge" and not boot.guestfwd:
        netdev = f"bridge,id=net0,br={opt(vm.bridge)}"
    else:
        # The install always uses user networking: the preseed comes through guestfwd.
        netdev = "user,id=net0" + (",restrict=on" if vm.restrict else "")
        if boot.guestfwd:
            netdev += f",guestfwd={opt(boot.guestfwd)}"
    return ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=net0,mac={plan.mac}"]


def _vnc(plan: VmPlan, boot: Boot) -> list[str]:
    vnc = plan.vm.vnc
    # A run follows the plan (no VGA for a compute card); an install, without the cards, has VNC unless refused.
    if not (plan.display if boot.passthrough else vnc.enabled is not False):
        return ["-display", "none"]
    host = f"[{vnc.listen}]" if ":" in vnc.listen else vnc.listen
    if vnc.password_file:
        # QEMU reads the password itself: it never appears in the script or the process list.
        return ["-object", f"secret,id=vncpass,format=raw,file={opt(vnc.password_file)}", "-vga", "std",
                "-vnc", f"{host}:{vnc.display},password-secret=vncpass"]
    return ["-vga", "std", "-vnc", f"{host}:{vnc.display}" + (",password=on" if vnc.password else "")]


def slots(devices: list[Device]) -> list[list[tuple[Device, int]]]:
    """Devices grouped by host slot, each with the guest function it gets (function 0 first)."""
    grouped: dict[str, list[Device]] = {}
    for dev in devices:
        grouped.setdefault(dev.address[:-2], []).append(dev)
    return [[(d, i) for i, d in enumerate(sorted(members, key=lambda d: d.address))] for members in grouped.values()]


def passthrough_args(devices: list[Device], iommufd: bool = False) -> list[str]:
    """One PCIe root port per host slot; the slot's functions stay together behind it.

    ``iommufd``: one iommufd object that every device attaches to (/dev/iommu and the
    device's cdev) instead of the VFIO group and container.
    """
    args: list[str] = ["-object", f"iommufd,id={OBJECT_ID}"] if iommufd else []
    for n, members in enumerate(slots(devices), start=1):
        port = f"rp{n}"
        args += ["-device", f"pcie-root-port,id={port},bus=pcie.0,chassis={n},slot={n}"]
        for dev, fn in members:
            value = f"vfio-pci,host={dev.address},bus={port},addr=00.{fn}" + (f",iommufd={OBJECT_ID}" if iommufd else "")
            if fn == 0 and len(members) > 1:
                value += ",multifunction=on"
            args += ["-device", value]
    return args


def build_argv(plan: VmPlan, boot: Boot | None = None) -> list[str]:
    """The full argv, program first (``taskset`` when the VM is pinned, which execs QEMU)."""
    boot = boot or Boot()
    fw = plan.firmware
    # [vms.tuning] holds for every boot, installs too: the pages and the node are the VM's either way.
    backend = backend_args(plan.placement, plan.memory_mib)
    machine = "q35" + (",smm=on" if fw.requires_smm else "") + (f",memory-backend={BACKEND_ID}" if backend else "")
    argv = [*launch_prefix(plan.placement), QEMU, "-name", plan.name, "-nodefaults", "-machine", machine, "-accel", plan.accel,
            "-cpu", _cpu(plan), "-m", str(plan.memory_mib), "-smp", str(plan.vm.cpus), *backend]
    if not fw.bios:  # firmware.type = "bios": QEMU's default SeaBIOS, nothing to say
        # Two pflash drives: CODE read-only, VARS the VM's own (never -bios: variables would not persist).
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={opt(fw.code)}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={opt(fw.vars)}"]
    if fw.secure_boot:
        argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    argv += ["-drive", f"if=none,id=disk0,format=qcow2,discard=unmap,file={opt(plan.disk)}",
             "-device", "virtio-blk-pci,drive=disk0,bootindex=1"]
    if boot.cdrom:
        argv += ["-drive", f"if=none,id=cd0,media=cdrom,readonly=on,file={opt(boot.cdrom)}",
                 "-device", "ide-cd,drive=cd0,bus=ide.0,bootindex=0"]
    argv += _network(plan, boot) + _vnc(plan, boot)
    argv += ["-serial", f"file:{boot.serial_log}" if boot.serial_log else "mon:stdio"]
    if boot.kernel:
        argv += ["-kernel", str(boot.kernel), "-initrd", str(boot.initrd), "-append", " ".join(boot.append)]
    if boot.no_reboot:
        argv.append("-no-reboot")
    argv += plan.vm_args
    if boot.passthrough and plan.devices:
        argv += passthrough_args(plan.devices, plan.iommufd) + plan.device_args
    return argv + list(plan.vm.extra_args)
