"""Recipe VM -> VmPlan: folders, disk, firmware, accelerator, passthrough groups and plugin quirks."""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lfspass.vm.guest_disk import parse_size
from lfspass.errors import LfspassError, VmError
from lfspass.vm.firmware import Firmware, download_targets, vm_firmware
from lfspass.host.read import Host
from lfspass.pci import parse_pci_address, parse_pci_id
from lfspass.plan import Device, resolve_devices
from lfspass.plugins import call_device, call_host, get_plugin_manager, owner_of
from lfspass.recipe import Recipe, VmSpec
from lfspass.host.placement import Placement, compute_card, place

LOOPBACK = ("127.0.0.1", "::1", "localhost")
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00); the stable API answers 12


@dataclass
class VmPlan:
    """Everything the argv builder, the launchers and the install read about one VM."""

    recipe: Recipe
    vm: VmSpec
    index: int
    dir: Path
    disk: Path
    memory_mib: int
    accel: str
    mac: str
    firmware: Firmware
    devices: list[Device] = field(default_factory=list)     # every function handed over, with addresses
    notes: list[str] = field(default_factory=list)          # said in the launcher's header
    cpu_flags: list[str] = field(default_factory=list)
    vm_args: list[str] = field(default_factory=list)
    device_args: list[str] = field(default_factory=list)
    vnc_password: str | None = field(default=None, repr=False)  # from vnc.password_file, for the XML
    iommufd: bool = False            # QEMU's iommufd backend (vfio_backend = "iommufd" and this QEMU has it)
    libvirt_iommufd: bool = False    # the same in the libvirt XML (libvirt 12.1.0 and later)
    placement: Placement = field(default_factory=Placement)   # [vms.tuning] as this host's sysfs decides it
    display: bool = True             # emulated VGA + VNC on runs (off for a compute card unless vnc.enabled)

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def where(self) -> str:
        return f"{self.recipe.path}: vms[{self.index}]"


def _kvm_api(dev: str) -> bool:
    """True when ``dev`` opens read-write and speaks the stable KVM API."""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == 12
    except OSError:
        return False
    finally:
        os.close(fd)


@functools.cache
def kvm_probe(dev: str = "/dev/kvm") -> str | None:
    """None when KVM runs a guest here, else why not (one line).

    Answering the API version is not enough (a nested host can fail every vCPU's MSR
    setup), so a one-instruction guest runs under ``-accel kvm -cpu host``: its reset
    vector writes to isa-debug-exit, which QEMU turns into exit status 1.
    """
    if not _kvm_api(dev):
        return f"{dev} is missing or not usable by this user"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return "qemu-system-x86_64 is not installed"
    with tempfile.TemporaryDirectory(prefix="lfspass-kvm-") as tmp:
        rom = bytearray(b"\xf4" * 65536)  # hlt everywhere
        rom[-16:-11] = b"\xb0\x00\xe6\xf4\xf4"  # at 0xfffffff0: mov al,0; out 0xf4,al; hlt
        Path(tmp, "probe.bin").write_bytes(rom)
        try:
            proc = subprocess.run([qemu, "-accel", "kvm", "-machine", "q35", "-cpu", "host", "-nodefaults",
                                   "-display", "none", "-m", "16", "-bios", str(Path(tmp, "probe.bin")),
                                   "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"],
                                  capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "a test guest under KVM did not finish in 30 s"
    if proc.returncode == 1:
        return None
    said = [line for line in proc.stderr.splitlines() if line.strip()]
    return "a test guest under KVM failed" + (f" ({' '.join(said[0].split())[:160]})" if said else
                                              f" (exit {proc.returncode})")


def _vnc_password(vm: VmSpec, where: str) -> str | None:
    """The VNC password from vnc.password_file, after checking only its owner can read it.

    A display reachable from other hosts needs it: libvirt's XML can only require a
    password it is given, and the launcher must not be weaker or stronger than the XML.
    """
    vnc = vm.vnc
    if not vnc.password_file:
        if vnc.listen not in LOOPBACK:
            raise VmError(f"{where}.vnc.listen = {vnc.listen!r} exposes the screen beyond this host: set "
                          "vnc.password_file (a 0600 file holding the password; launcher and XML both require it), "
                          "or listen on 127.0.0.1 and use `ssh -L`")
        return None
    path = Path(vnc.password_file)
    try:
        st = path.stat()
        raw = path.read_bytes()[:64]
    except OSError as exc:
        raise VmError(f"{where}.vnc.password_file = {str(path)!r}: {exc.strerror}; write the password into it "
                      "(printf %s PASSWORD > FILE; chmod 600 FILE)") from None
    if st.st_mode & 0o077:
        raise VmError(f"{where}.vnc.password_file {path} is mode {st.st_mode & 0o777:o}: others can read the "
                      f"password; chmod 600 {path}")
    if st.st_uid != os.geteuid():
        raise VmError(f"{where}.vnc.password_file {path} belongs to uid {st.st_uid}, not to the user running "
                      f"lfspass (uid {os.geteuid()}); chown it, so nobody else can read the password")
    text = raw.decode("ascii", errors="replace")
    if not 1 <= len(text) <= 8 or not all(" " < c < "\x7f" for c in text):
        raise VmError(f"{where}.vnc.password_file {path}: expected 1 to 8 printable ASCII characters without a "
                      "newline (VNC uses 8 at most); write it with printf %s PASSWORD > FILE")
    return text


def vm_dir(recipe: Recipe, vm: VmSpec) -> Path:
    return Path(vm.dir) if vm.dir else recipe.root / "var/lib/lfspass/vms" / vm.name


def default_mac(name: str) -> str:
    """QEMU's locally administered 52:54:00 prefix + 3 bytes of the name's sha256 (stable per VM)."""
    h = hashlib.sha256(name.encode()).hexdigest()
    return "52:54:00:" + ":".join(h[i:i + 2] for i in (0, 2, 4))


def _group_members(host: Host, address: str) -> list[str]:
    """Every non-bridge function in ``address``'s IOMMU group (just itself when groups are unknown)."""
    dev = host.pci_device(address)
    if dev is None or dev.iommu_group is None:
        return [address]
    members = host.iommu_groups.get(dev.iommu_group, [address])
    return [a for a in members if a == address or not ((d := host.pci_device(a)) and d.is_bridge)]


def _wanted(recipe: Recipe, vm: VmSpec, index: int, planned: list[Device]) -> list[Device]:
    """The [[devices]] entries this VM names, each found by id or address."""
    out: list[Device] = []
    for j, entry in enumerate(vm.devices):
        where = f"{recipe.path}: vms[{index}].devices[{j}]"
        if re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}", entry.strip()):
            key = parse_pci_id(entry, where)
            found = [d for d in planned if d.id == key and not d.companion_of]
        else:
            key = parse_pci_address(entry, where)
            found = [d for d in planned if d.address == key]
        if not found:
            raise VmError(f"{where} = {entry!r} is not in [[devices]]; add it there too, so the host "
                          "hands it to vfio-pci at boot")
        out += [d for d in found if d not in out]
    return out


def _passthrough(plan: VmPlan, planned: list[Device], wanted: list[Device], host: Host) -> None:
    pm = get_plugin_manager()
    by_addr = {d.address: d for d in planned if d.address}
    for dev in wanted:
        addresses = [dev.address] if dev.address else [d.address for d in host.find_id(dev.id)]
        if not addresses:
            msg = (f"{plan.where}.devices: {dev.id} is not present under {host.root / 'sys/bus/pci/devices'}")
            if plan.vm.missing_devices == "error":
                raise VmError(f"{msg}; give its address in [[devices]] (lspci -Dnn -d {dev.id}) or set "
                              "missing_devices = \"skip\"")
            plan.notes.append(f"{dev.id} ({dev.name or 'device'}) is not on this host: left out (missing_devices = skip)")
            continue
        for address in addresses:
            for member in [*_group_members(host, address),
                           *[d.address for d in planned if d.companion_of == address]]:
                if any(d.address == member for d in plan.devices):
                    continue
                if member in by_addr:
                    found = by_addr[member]
                elif member == address:
                    found = dataclasses.replace(dev, address=address)
                else:
                    info = host.pci_device(member)
                    mid = info.id if info and info.id else ""
                    found = Device(id=mid, address=member, pci_class=f"0x{info.pci_class:06x}" if info and
                                   info.pci_class is not None else "", plugin=owner_of(pm, mid) if mid else "",
                                   companion_of=address)
                    plan.notes.append(f"{member} shares IOMMU group with {address}: passed through too "
                                      + ("(lfspass bind takes it along)" if plan.vm.bind == "runtime" else
                                         "(bind it to vfio-pci on the host as well)"))
                if not found.name and (info := host.pci_device(member)) is not None and info.name:
                    found = dataclasses.replace(found, name=info.name)  # pci.ids name, for the XML comments
                plan.devices.append(found)


def _dedupe_options(args: list[str]) -> list[str]:
    """Drop repeated ``-opt value`` pairs (two P10s must not add the same -fw_cfg name twice)."""
    out: list[str] = []
    seen: set[tuple[str, ...]] = set()
    i = 0
    while i < len(args):
        pair = tuple(args[i:i + 2]) if i + 1 < len(args) and not args[i + 1].startswith("-") else (args[i],)
        if pair not in seen:
            seen.add(pair)
            out += pair
        i += len(pair)
    return out


def _compute_card(pm, plan: VmPlan, host: Host | None) -> str:
    """The first card of the VM without display outputs: as plugins say (a "display" answer wins), else by
    PCI class 0302."""
    for dev in (d for d in plan.devices if not d.companion_of):
        kinds = call_device(pm, "lfspass_device_kind", dev, vm=plan.vm)
        if "display" not in kinds and ("compute" in kinds or compute_card(host, [dev.address])):
            return dev.address
    return ""


def build_vm_plan(recipe: Recipe, vm: VmSpec, *, accel: str | None = None) -> VmPlan:
    """Resolve one VM; ``accel`` overrides ``auto`` detection (golden tests pin it)."""
    index = recipe.vms.index(vm)
    where = f"{recipe.path}: vms[{index}]"
    folder = vm_dir(recipe, vm)
    if vm.cpus < 1:
        raise VmError(f"{where}.cpus = {vm.cpus}: expected 1 or more vCPUs")
    memory = parse_size(vm.memory, f"{where}.memory", default_unit="M")
    if memory < (64 << 20):
        raise VmError(f"{where}.memory = {vm.memory!r}: give at least 64M (OVMF alone needs that)")
    parse_size(vm.disk.size, f"{where}.disk.size")
    mac = (vm.mac or default_mac(vm.name)).lower()
    if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac) or int(mac[:2], 16) & 1:
        raise VmError(f"{where}.mac = {vm.mac!r}: expected a unicast MAC such as 52:54:00:12:34:56")
    vnc_secret = _vnc_password(vm, where) if vm.vnc.enabled is not False else None
    if not 0 <= vm.vnc.display < 100:
        raise VmError(f"{where}.vnc.display = {vm.vnc.display}: expected 0..99 (port 5900 + N)")
    for part in ("code", "vars"):
        if bool(getattr(vm.firmware, f"{part}_url")) != bool(getattr(vm.firmware, f"{part}_sha256")):
            raise VmError(f"{where}.firmware.{part}_url needs {part}_sha256 (and the other way round): "
                          "lfspass does not boot unverified firmware")
    fetched = {k: dest for k, (_, _, dest) in download_targets(vm.firmware, folder).items()}
    chosen = accel or vm.accel
    auto_note = None
    if chosen == "auto":
        why = kvm_probe()
        chosen = "kvm" if why is None else "tcg"
        if why is not None:
            auto_note = f"accel = auto chose tcg (slow): {why}"
    plan = VmPlan(recipe=recipe, vm=vm, index=index, dir=folder,
                  disk=Path(vm.disk.path) if vm.disk.path else folder / f"{vm.name}.qcow2",
                  memory_mib=memory >> 20, accel=chosen, mac=mac,
                  firmware=vm_firmware(vm.firmware, folder, fetched))
    plan.vnc_password = vnc_secret
    if auto_note:
        plan.notes.append(auto_note)
    host = None
    if vm.devices:
        planned = resolve_devices(recipe)
        wanted = _wanted(recipe, vm, index, planned)
        try:
            host = Host(recipe.host.sysfs_root)
        except LfspassError as exc:
            raise VmError(f"{recipe.path}: host.sysfs_root: {exc.one_line()}") from None
        _passthrough(plan, planned, wanted, host)
        if plan.devices and recipe.kernel.vfio_backend == "iommufd":
            from lfspass.vm.iommufd import choose

            choose(plan)
    plan.placement = place(recipe, vm, plan.memory_mib, host)
    plan.notes += plan.placement.notes
    pm = get_plugin_manager()
    card = _compute_card(pm, plan, host)
    plan.display = vm.vnc.enabled if vm.vnc.enabled is not None else not card
    if card and vm.vnc.enabled is None:
        plan.notes.append(f"{card} is a compute card (no display outputs): runs with it get no "
                          "emulated VGA and no VNC, the serial console only; set vnc.enabled = true for them")
    flags = call_host(pm, "lfspass_cpu_flags", vm=vm)
    device_args: list[str] = []
    for dev in plan.devices:
        flags += call_device(pm, "lfspass_cpu_flags", dev, vm=vm)
        device_args += call_device(pm, "lfspass_qemu_device_args", dev, vm=vm)
    if recipe.host.cpu_vendor == "amd":
        flags.append("topoext=on")  # AMD guests see SMT siblings only with topoext
    plan.cpu_flags = list(dict.fromkeys(flags))
    plan.vm_args = _dedupe_options(call_host(pm, "lfspass_qemu_vm_args", vm=vm))
    plan.device_args = _dedupe_options(device_args)
    return plan
