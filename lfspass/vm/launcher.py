"""Write a VM's launchers: ``<vm>.sh`` (quoted argv) and the libvirt domain ``<vm>.xml``."""
from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from lfspass import journal
from lfspass.errors import TemplateError
from lfspass.vm.qemu_argv import Boot, build_argv
from lfspass.render import TEMPLATES
from lfspass.vm.plan import VmPlan
from lfspass.vm.runtime_bind import comments as runtime_comments, wrap as runtime_wrap

EMULATOR = "/usr/bin/qemu-system-x86_64"  # Debian's path; libvirt wants it absolute
# The domain's <uuid> is UUIDv5(UUID_NAMESPACE, VM name): the same on every run, so a second
# `virsh define` updates the domain instead of failing on a new uuid for the same name.
UUID_NAMESPACE = uuid.UUID("6c1f0e0a-8a57-5d2f-9f36-1f5a0d7c2e11")
# The restricted user NIC lives in <qemu:commandline>, where libvirt does not see it: it gets a
# slot of its own on pcie.0 that libvirt never hands out (it fills slots from 0x01 upwards and
# keeps 0x1a, 0x1b, 0x1d, 0x1e and 0x1f for USB, sound, the DMI bridge and the ICH9 functions).
USER_NIC_ADDR = "0x1c"
SERIAL_LOG = "libvirt-serial.log"  # in the VM folder: virtlogd writes the guest's serial console here


def domain_uuid(name: str) -> str:
    return str(uuid.uuid5(UUID_NAMESPACE, name))


INSTALL_PURPOSE = " (interactive install over VNC)"


def _written_by(plan: VmPlan, purpose: str) -> str:
    """The start of a launcher's second line: how lfspass recognises a script it wrote."""
    return f"# VM {plan.name}{purpose}: written by lfspass "


def script_text(plan: VmPlan, argv: list[str], purpose: str = "") -> str:
    """A POSIX sh script that execs ``argv``; every item shlex-quoted, one option per line."""
    vm = plan.vm
    lines = ["#!/bin/sh",
             f"{_written_by(plan, purpose)}from {plan.recipe.path}; edit the recipe, not this file.",
             "# The serial console and QEMU monitor share this terminal: Ctrl-A c switches, Ctrl-A x quits."]
    if "-vnc" in argv:
        lines.append(f"# VNC: {vm.vnc.listen}:{5900 + vm.vnc.display} (from elsewhere: ssh -L "
                     f"{5900 + vm.vnc.display}:127.0.0.1:{5900 + vm.vnc.display} this-host).")
        if vm.vnc.password_file:
            lines.append(f"# VNC asks for the password in {vm.vnc.password_file}.")
        elif vm.vnc.password:
            lines.append("# VNC needs a password: in the monitor (Ctrl-A c) type `change vnc password`; "
                         "until then nobody can log in.")
    lines += [f"# Note: {n}" for n in plan.notes]
    # bind = "runtime": the devices go to vfio-pci for this run only (lfspass.vm.runtime_bind).
    runtime = plan.vm.bind == "runtime" and any(a.startswith("vfio-pci,") for a in argv)
    if runtime:
        lines += runtime_comments(plan)
    # A value with a line break (a device name, an address) must not end a comment and start a command.
    lines = lines[:1] + ["# " + " ".join(line[1:].split()) if line.startswith("#") else line for line in lines[1:]]
    # Join option/value pairs on one line so the script reads like the seed's command.
    # A program QEMU runs under (taskset -c CPUS) stays on the exec line, before QEMU.
    start = next((n for n, a in enumerate(argv) if a.endswith("qemu-system-x86_64")), 0) + 1
    parts, i = [], start
    while i < len(argv):
        take = 2 if argv[i].startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-") else 1
        parts.append(" ".join(shlex.quote(a) for a in argv[i:i + take]))
        i += take
    body = " \\\n    ".join([("" if runtime else "exec ") + " ".join(shlex.quote(a) for a in argv[:start]), *parts])
    head = "\n".join(lines) + "\n"
    return head + (runtime_wrap(plan, body) if runtime else body + ' "$@"\n')


def _xml_comment(text: object) -> Markup:
    # "--" may not appear inside an XML comment.
    safe = str(escape(str(text))).replace("--", "- -").rstrip("-")
    return Markup(f"<!-- {safe} -->")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=True, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["xml_comment"] = _xml_comment
    return env


def _cpu_features(flags: list[str]) -> tuple[bool, list[tuple[str, str]], list[str]]:
    """-cpu properties -> (maxphysaddr passthrough, <feature>s, leftovers libvirt cannot say)."""
    phys, features, rest = False, [], []
    for flag in flags:
        key, _, value = flag.partition("=")
        if key == "host-phys-bits" and value == "on":
            phys = True
        elif value in ("on", "off") and "-" not in key and key != "kvm":
            # CPUID feature names carry no '-'; QEMU-only properties (kvm=off, l3-cache) do.
            features.append(("require" if value == "on" else "disable", key))
        else:
            rest.append(flag)
    return phys, features, rest


def domain_xml(plan: VmPlan, xml_path: Path) -> str:
    vm, fw = plan.vm, plan.firmware
    phys, features, rest = _cpu_features(plan.cpu_flags if plan.accel == "kvm" else [])
    qemu_args: list[str] = []
    if vm.network == "user" and vm.restrict:
        # libvirt's <interface type="user"> cannot say restrict=on; pass the netdev through as is.
        qemu_args += ["-netdev", "user,id=lfspassnet0,restrict=on",
                      "-device", f"virtio-net-pci,netdev=lfspassnet0,mac={plan.mac},bus=pcie.0,addr={USER_NIC_ADDR}"]
    for flag in rest:
        qemu_args += ["-global", f"host-x86_64-cpu.{flag}"]
    qemu_args += plan.vm_args + (plan.device_args if plan.devices else []) + list(vm.extra_args)
    hostdevs = []
    for dev in plan.devices:
        dom, bus, rest_addr = dev.address.split(":")
        slot, fn = rest_addr.split(".")
        label = f"{dev.address} {dev.id} {dev.name or ''}".strip()
        if dev.companion_of:
            label += f" (travels with {dev.companion_of}: same slot or IOMMU group)"
        hostdevs.append({"domain": dom, "bus": bus, "slot": slot, "function": fn, "label": label,
                         "iommufd": plan.libvirt_iommufd})
    context = {
        "name": plan.name, "uuid": domain_uuid(plan.name), "recipe": str(plan.recipe.path), "xml_path": str(xml_path),
        "libvirt": vm.libvirt, "dir": str(plan.dir), "serial_log": str(plan.dir / SERIAL_LOG),
        "domain_type": "kvm" if plan.accel == "kvm" else "qemu", "memory_mib": plan.memory_mib, "cpus": vm.cpus,
        "bios": fw.bios, "code": str(fw.code), "vars": str(fw.vars), "secure_boot": fw.secure_boot, "smm": fw.requires_smm,
        "phys_passthrough": phys, "cpu_features": features, "emulator": EMULATOR, "disk": str(plan.disk),
        "network": vm.network, "restrict": vm.restrict, "bridge": vm.bridge, "mac": plan.mac,
        "vnc": plan.display, "vnc_listen": vm.vnc.listen, "vnc_port": 5900 + vm.vnc.display,
        "vnc_password": vm.vnc.password, "vnc_passwd": plan.vnc_password, "hostdevs": hostdevs, "qemu_args": qemu_args,
        "pin_cpus": plan.placement.cpus, "numa_node": plan.placement.node, "page_kib": plan.placement.page_kib}
    try:
        return _env().get_template("domain.xml.j2").render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {TEMPLATES / 'domain.xml.j2'}: {exc.message}") from None


def _install_sh(plan: VmPlan) -> Path:
    return plan.dir / f"{plan.name}-install.sh"


def launcher_paths(plan: VmPlan) -> dict[str, Path]:
    paths = {"sh": plan.dir / f"{plan.name}.sh", "xml": plan.dir / f"{plan.name}.xml"}
    if plan.vm.installer.source in ("netboot", "iso"):   # "image" has no installer to launch
        paths["install_sh"] = _install_sh(plan)
    return paths


def write_launchers(plan: VmPlan, install_boot: Boot | None = None) -> list[Path]:
    """Write the launchers; return those whose content changed (or that were removed).

    An install launcher lfspass wrote earlier goes away once the recipe drops the installer,
    so nobody boots the installer over a disk that now holds the system; a file of the same
    name that lfspass did not write is left alone.
    """
    paths = launcher_paths(plan)
    changed = []
    stale = _install_sh(plan)
    if "install_sh" not in paths and stale.is_file():
        with stale.open(errors="replace") as f:
            head = [f.readline(), f.readline()]
        if head[1].startswith(_written_by(plan, INSTALL_PURPOSE)):
            journal.remove(plan.recipe.root, stale)  # journaled: `lfspass rollback` brings it back
            changed.append(stale)
    if journal.write_atomic(plan.recipe.root, paths["sh"], script_text(plan, build_argv(plan)), mode=0o755):
        changed.append(paths["sh"])
    # The XML may carry the VNC password: its owner only (the folder is 0700 too).
    if journal.write_atomic(plan.recipe.root, paths["xml"], domain_xml(plan, paths["xml"]), mode=0o600 if plan.vnc_password else None):
        changed.append(paths["xml"])
    if "install_sh" in paths and install_boot is not None:
        text = script_text(plan, build_argv(plan, install_boot), INSTALL_PURPOSE)
        if journal.write_atomic(plan.recipe.root, paths["install_sh"], text, mode=0o755):
            changed.append(paths["install_sh"])
    return changed
