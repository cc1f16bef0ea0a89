"""The recipe: one TOML file describing one host, its kernel, boot, devices and VMs."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RecipeError
from .pci import parse_pci_address, parse_pci_id
from .schema import choice, load_table, path_field

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO / "recipes" / "lab.toml"


@dataclass
class HostSection:
    name: str = field(default="host", metadata={"doc": "a label for messages and the GRUB title"})
    root: str = path_field("/", "install root: everything lfspass writes goes below it")
    sysfs_root: str = path_field("/", "host root to read PCI devices from (a saved `doctor --save` folder works)")
    init: str = choice("sysvinit", "systemd", default="sysvinit", doc="which LFS book the host follows")
    cpu_vendor: str = choice("intel", "amd", default="intel", doc="picks IOMMU Kconfig symbols and kernel parameters")


@dataclass
class KernelSection:
    source: str = path_field("", "kernel tree folder or release tarball; empty = lfspass does not build the "
                                 "kernel and reads the one installed under the root (set version)")
    version: str = field(default="", metadata={"doc": "kernel release; empty = read from the tree's Makefile"})
    lfs_version: str = field(default="12.2", metadata={"doc": "the -lfs-<ver> suffix of the installed vmlinuz"})
    base: str = field(default="tinyconfig", metadata={"doc": "tinyconfig | defconfig | current | path to a .config (.xz ok)"})
    vfio: str = choice("module", "builtin", default="module", doc="VFIO and VFIO_PCI as =m or =y")
    config: dict[str, str] = field(default_factory=dict, metadata={"doc": "extra Kconfig requests, SYMBOL = \"y\""})
    resolve: bool = field(default=False, metadata={"doc": "enable visible symbols a refused request depends on"})
    build_dir: str = path_field("build/kernel", "out-of-tree build folder (O=)")
    jobs: int = field(default=0, metadata={"doc": "make -j; 0 = number of CPUs"})
    timestamp: str = field(default="", metadata={"doc": "KBUILD_BUILD_TIMESTAMP; empty = SOURCE_DATE_EPOCH or the tree's date"})
    ccache: bool = field(default=False, metadata={"doc": "compile through ccache when it is installed"})
    docs: bool = field(default=False, metadata={"doc": "also install Documentation to usr/share/doc/linux-<ver>"})


@dataclass
class BootSection:
    fs_uuid: str = field(default="", metadata={"doc": "filesystem UUID GRUB searches for (blkid)"})
    root_partuuid: str = field(default="", metadata={"doc": "root= PARTUUID of the LFS root partition"})
    root_device: str = field(default="", metadata={"doc": "root= device when no PARTUUID is given, e.g. /dev/vda1"})
    iommu_pt: bool = field(default=True, metadata={"doc": "add iommu=pt (identity-map host devices; weaker DMA hardening)"})
    acs_override: str = field(default="", metadata={"doc": "pcie_acs_override= value; needs the out-of-tree ACS patch"})
    microcode: str = field(default="", metadata={"doc": "initrd line for early microcode, e.g. /boot/microcode.img"})
    cmdline: list[str] = field(default_factory=list, metadata={"doc": "extra kernel parameters"})
    grub_cfg: str = field(default="boot/grub/grub.cfg", metadata={"doc": "grub.cfg path below the install root"})
    title: str = field(default="", metadata={"doc": "menuentry title; empty = 'GNU/Linux, Linux <rel>-lfs-<lfsver>'"})
    entry_template: str = path_field("", "your own Jinja2 template for the menuentry (see lfspass/templates/grub-entry.j2)")


@dataclass
class DeviceSpec:
    address: str = field(default="", metadata={"doc": "PCI address, e.g. 82:00.0 (id read from sysfs)"})
    id: str = field(default="", metadata={"doc": "vendor:device, e.g. 10de:1e37"})
    name: str = field(default="", metadata={"doc": "a label"})


@dataclass
class VmSpec:
    name: str = field(default="vm", metadata={"doc": "VM name: letters, digits, '-', '_', '.'"})
    memory: str = field(default="4G", metadata={"doc": "guest memory (QEMU -m)"})
    cpus: int = field(default=2, metadata={"doc": "guest vCPUs"})
    devices: list[str] = field(default_factory=list, metadata={"doc": "passthrough devices: addresses or ids from [[devices]]"})
    network: str = choice("user", "bridge", "none", default="user", doc="user (slirp), bridge (tap on a bridge) or none")
    bridge: str = field(default="br0", metadata={"doc": "bridge for network = bridge"})


@dataclass
class Recipe:
    host: HostSection = field(default_factory=HostSection)
    kernel: KernelSection = field(default_factory=KernelSection)
    boot: BootSection = field(default_factory=BootSection)
    devices: list[DeviceSpec] = field(default_factory=list)
    vms: list[VmSpec] = field(default_factory=list)
    path: Path = field(default=Path("recipe.toml"), metadata={"doc": "the recipe file (set by the loader)"}, init=False)

    @property
    def root(self) -> Path:
        return Path(self.host.root)


def recipe_path(explicit: str | os.PathLike | None = None) -> Path:
    """The recipe to use: explicit path, else $LFSPASS_RECIPE, else recipes/lab.toml."""
    chosen = explicit or os.environ.get("LFSPASS_RECIPE") or DEFAULT_RECIPE
    return Path(chosen)


def _validate(recipe: Recipe, file: Path) -> None:
    """Checks that cross keys or need parsing beyond a type."""
    for i, dev in enumerate(recipe.devices):
        where = f"{file}: devices[{i}]"
        if not dev.address and not dev.id:
            raise RecipeError(f"{where} needs 'address' (e.g. 82:00.0) or 'id' (e.g. 10de:1e37)")
        if dev.id:
            dev.id = parse_pci_id(dev.id, f"{where}.id")
        if dev.address:
            dev.address = parse_pci_address(dev.address, f"{where}.address")
    names = set()
    for i, vm in enumerate(recipe.vms):
        where = f"{file}: vms[{i}].name"
        if not vm.name or not all(c.isalnum() or c in "-_." for c in vm.name) or vm.name.startswith("."):
            raise RecipeError(f"{where} = {vm.name!r}: use letters, digits, '-', '_' and '.' only")
        if vm.name in names:
            raise RecipeError(f"{where} = {vm.name!r}: two VMs share this name; names must be unique")
        names.add(vm.name)
    for key, value in recipe.kernel.config.items():
        if not key.isupper() or key.startswith("CONFIG_"):
            raise RecipeError(f"{file}: kernel.config.{key}: write Kconfig symbols in upper case without CONFIG_, e.g. VFIO_PCI = \"m\"")


def load_recipe(path: str | os.PathLike | None = None) -> Recipe:
    """Read and check a recipe; relative paths resolve against the recipe's folder."""
    file = recipe_path(path)
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{file}: no such recipe; pass recipe=PATH (doit) or --recipe PATH, or set LFSPASS_RECIPE")
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{file}: not valid TOML ({exc}); fix the line it names")
    except OSError as exc:
        raise RecipeError(f"{file}: cannot read ({exc.strerror})")
    base = file.resolve().parent
    recipe = load_table(Recipe, data, file, "", base)
    recipe.path = file
    _validate(recipe, file)
    return recipe
