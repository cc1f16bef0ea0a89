"""Recipe -> plan: the one data model every renderer and task reads."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lfspass.errors import PciIdError, RecipeError
from lfspass.model import config_values
from lfspass.pci import parse_pci_address, parse_pci_id
from lfspass.plugins import call_device, call_host, get_plugin_manager, owner_of
from lfspass.recipe import Recipe

# Modules lfspass autoloads for vfio-pci, in load order.  vfio_virqfd was folded into
# vfio.ko in 6.2; it is added only when the installed kernel still ships it.
VFIO_MODULES = ("vfio", "vfio_iommu_type1", "vfio_virqfd", "vfio-pci")


@dataclass(frozen=True)
class Device:
    """A PCI device lfspass hands to vfio-pci (or a companion function of one)."""

    id: str                  # vendor:device, lower-case hex
    address: str = ""        # 0000:bb:dd.f when known
    pci_class: str = ""      # 0x030200 when known (from sysfs)
    name: str = ""
    plugin: str = ""         # name of the plugin that claims the id
    companion_of: str = ""   # address of the main function this one travels with

    @property
    def vendor(self) -> str:
        return self.id.split(":")[0]


@dataclass
class KernelFacts:
    """What the installed kernel says (or, before it is built, what the recipe asks)."""

    release: str
    vfio_builtin: bool
    config: dict[str, str] = field(default_factory=dict)   # CONFIG_X -> value; empty before install
    modules: set[str] = field(default_factory=set)          # loadable module names (from modules.dep)
    builtin: set[str] = field(default_factory=set)          # built-in module names (modules.builtin)
    installed: bool = False

    @property
    def version_tuple(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _modname(path: str) -> str:
    return Path(path.split(":")[0].strip()).name.split(".ko")[0].replace("-", "_")


def read_kernel_facts(recipe: Recipe, release: str) -> KernelFacts:
    """Facts from ``<root>/boot/config-<rel>`` and ``<root>/lib/modules/<rel>/`` when installed."""
    paths = kernel_paths(recipe, release)
    cfg_file, moddir = paths.config, paths.modules_dir
    facts = KernelFacts(release=release, vfio_builtin=recipe.kernel.vfio == "builtin")
    if cfg_file.is_file():
        facts.config = {f"CONFIG_{k}": v for k, v in config_values(cfg_file.read_text()).items()}
        facts.vfio_builtin = facts.config.get("CONFIG_VFIO_PCI") == "y"
        facts.installed = True
    if (moddir / "modules.dep").is_file():
        facts.modules = {_modname(l) for l in (moddir / "modules.dep").read_text().splitlines() if l.strip()}
    if (moddir / "modules.builtin").is_file():
        facts.builtin = {_modname(l) for l in (moddir / "modules.builtin").read_text().splitlines() if l.strip()}
    return facts


@dataclass(frozen=True)
class KernelPaths:
    """Where a kernel release is installed below the recipe's root (LFS names)."""

    vmlinuz: Path
    system_map: Path
    config: Path
    modules_dir: Path
    manifest: Path

    @property
    def modules_dep(self) -> Path:
        return self.modules_dir / "modules.dep"

    @property
    def modules_builtin(self) -> Path:
        return self.modules_dir / "modules.builtin"


def kernel_paths(recipe: Recipe, release: str) -> KernelPaths:
    boot = recipe.root / "boot"
    return KernelPaths(
        vmlinuz=boot / f"vmlinuz-{release}-lfs-{recipe.kernel.lfs_version}",
        system_map=boot / f"System.map-{release}",
        config=boot / f"config-{release}",
        modules_dir=recipe.root / "lib" / "modules" / release,
        manifest=boot / f"lfspass-{release}.json",
    )


def _sysfs_attr(sysfs_root: Path, address: str, attr: str) -> str:
    try:
        return (sysfs_root / "sys/bus/pci/devices" / address / attr).read_text().strip()
    except OSError:
        return ""


def resolve_devices(recipe: Recipe) -> list[Device]:
    """Recipe devices -> Devices with ids, owners and same-slot companion functions."""
    pm = get_plugin_manager()
    sysroot = Path(recipe.host.sysfs_root)
    out: list[Device] = []
    seen: set[str] = set()
    for i, spec in enumerate(recipe.devices):
        pci_id, cls = spec.id, ""
        if spec.address:
            vendor = _sysfs_attr(sysroot, spec.address, "vendor")
            if vendor:
                device = _sysfs_attr(sysroot, spec.address, "device") or ""
                found = parse_pci_id(f"{vendor[2:]}:{device[2:]}", f"{sysroot}/sys/bus/pci/devices/{spec.address}")
                cls = _sysfs_attr(sysroot, spec.address, "class")
                if pci_id and pci_id != found:
                    # The card at that address would never be bound (vfio-pci ids= names the other).
                    raise PciIdError(
                        f"{recipe.path}: devices[{i}] gives address {spec.address} and id {pci_id}, but the "
                        f"device at {spec.address} is {found} ({sysroot / 'sys/bus/pci/devices' / spec.address}); "
                        "fix whichever is wrong (lspci -Dnn -s " + spec.address + ")")
                pci_id = pci_id or found
            elif not pci_id:
                raise PciIdError(
                    f"{recipe.path}: devices[{i}].address = '{spec.address}' is not present in "
                    f"{sysroot / 'sys/bus/pci/devices'}; check `lspci -D`, or give its id (vendor:device)")
        dev = Device(id=pci_id, address=spec.address, pci_class=cls, name=spec.name, plugin=owner_of(pm, pci_id))
        out.append(dev)
        seen.add(spec.address or pci_id)
        # Other functions of the same slot (a GPU's .1 HDMI audio) join its IOMMU group
        # and must go to vfio-pci too, or the group is not viable.
        if spec.address:
            slot = spec.address[:-1]
            for fn in sorted((sysroot / "sys/bus/pci/devices").glob(f"{slot}*")):
                if fn.name in seen or fn.name == spec.address:
                    continue
                v, d = _sysfs_attr(sysroot, fn.name, "vendor"), _sysfs_attr(sysroot, fn.name, "device")
                if v and d:
                    cid = parse_pci_id(f"{v[2:]}:{d[2:]}", str(fn))
                    out.append(Device(id=cid, address=fn.name, pci_class=_sysfs_attr(sysroot, fn.name, "class"),
                                      plugin=owner_of(pm, cid), companion_of=spec.address))
                    seen.add(fn.name)
    return out


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def runtime_only(recipe: Recipe, devices: list[Device]) -> list[Device]:
    """Devices named only by VMs with bind = "runtime" (and their companions): `lfspass bind` takes
    them when such a VM starts, so the boot-time ids leave them on their host drivers."""
    keys: dict[str, set[str]] = {"boot": set(), "runtime": set()}
    for vm in recipe.vms:
        for entry in vm.devices:
            text = entry.strip().lower()
            keys[vm.bind].add(text if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{4}", text) else parse_pci_address(text))

    def named(dev: Device, how: str) -> bool:
        return dev.address in keys[how] or dev.id in keys[how]

    mains = {d.address or d.id for d in devices if not d.companion_of and named(d, "runtime") and not named(d, "boot")}
    return [d for d in devices if (d.companion_of or d.address or d.id) in mains]


@dataclass
class HostPlan:
    """Everything ``grub`` and ``vfio`` render, computed once from recipe + plugins + kernel."""

    recipe: Recipe
    kernel: KernelFacts
    devices: list[Device]
    cmdline: list[str]
    modprobe: list[str]
    autoload: list[str]
    warnings: list[str]
    runtime: list[Device] = field(default_factory=list)   # bound at VM start (bind = "runtime"), not at boot

    @property
    def vfio_ids(self) -> list[str]:
        return _unique([d.id for d in self.devices if d not in self.runtime])

    @property
    def vmlinuz(self) -> str:
        return f"vmlinuz-{self.kernel.release}-lfs-{self.recipe.kernel.lfs_version}"


def _autoload(facts: KernelFacts, extra: list[str]) -> list[str]:
    """Modules to load at boot, as the installed kernel ships them."""
    if facts.vfio_builtin:
        wanted = []
    elif facts.modules:
        wanted = [m for m in VFIO_MODULES if m.replace("-", "_") in facts.modules]
    else:
        # Not built yet: assume what the release will ship.
        wanted = [m for m in VFIO_MODULES if not (m == "vfio_virqfd" and facts.version_tuple >= (6, 2))]
    wanted += [m for m in extra if m.replace("-", "_") not in facts.builtin]
    return _unique(wanted)


def build_plan(recipe: Recipe, release: str) -> HostPlan:
    """Compute the host plan for the kernel ``release`` installed below the recipe's root."""
    pm = get_plugin_manager()
    facts = read_kernel_facts(recipe, release)
    devices = resolve_devices(recipe)
    cmdline = call_host(pm, "lfspass_cmdline", recipe=recipe)
    modprobe = call_host(pm, "lfspass_modprobe", recipe=recipe)
    autoload = call_host(pm, "lfspass_autoload", recipe=recipe)
    for dev in devices:
        cmdline += call_device(pm, "lfspass_cmdline", dev, recipe=recipe)
        modprobe += call_device(pm, "lfspass_modprobe", dev, recipe=recipe)
        autoload += call_device(pm, "lfspass_autoload", dev, recipe=recipe)
    warnings: list[str] = []
    # The kernel config decides what may go on the command line.
    if recipe.host.cpu_vendor == "intel" and facts.config.get("CONFIG_INTEL_IOMMU_DEFAULT_ON") == "y":
        cmdline = [c for c in cmdline if c != "intel_iommu=on"]
    runtime = runtime_only(recipe, devices)
    ids = _unique([d.id for d in devices if d not in runtime])
    clash = sorted({d.id for d in runtime} & set(ids))
    if clash:
        warnings.append(f"{', '.join(clash)}: a bind = \"runtime\" device has the id of a device bound at boot, and "
                        "vfio-pci ids= takes every device with that id at boot; give each VM its own card model or "
                        "make both bind = \"runtime\"")
    if facts.vfio_builtin and ids:
        cmdline.append("vfio-pci.ids=" + ",".join(ids))
    if recipe.boot.acs_override:
        cmdline.append(f"pcie_acs_override={recipe.boot.acs_override}")
        warnings.append("pcie_acs_override needs the out-of-tree ACS override patch; "
                        "a mainline kernel ignores it (and groups stay as they are)")
    cmdline += recipe.boot.cmdline
    bad = [c for c in cmdline if c.startswith("amd_iommu=on")]
    if bad:
        raise RecipeError(f"{recipe.path}: boot.cmdline has 'amd_iommu=on', which the kernel rejects "
                          "(AMD-Vi: Unknown option); AMD's IOMMU is on by default: remove it")
    return HostPlan(recipe=recipe, kernel=facts, devices=devices, cmdline=_unique(cmdline),
                    modprobe=_unique(modprobe), autoload=_autoload(facts, autoload), warnings=warnings,
                    runtime=runtime)
