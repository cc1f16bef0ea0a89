"""The recipe: one TOML file describing one host, its kernel, boot, devices and VMs.

sections.py holds the tables (one dataclass each), rules.py the form of keys a type cannot
say; this module loads and cross-checks a file.  ``python -m lfspass.recipe`` regenerates the
table in docs/reference/recipe.md.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from lfspass.errors import RecipeError
from lfspass.pci import parse_pci_address, parse_pci_id
from lfspass.recipe.rules import RULES
from lfspass.recipe.sections import (BootSection, DeviceSpec, DiskSpec, ExternalModuleSpec, FirmwareSpec, HostSection,
                                     InstallerSpec, KernelSection, LabSection, Recipe, TuningSpec, VmSpec, VncSpec)
from lfspass.schema import load_table

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_RECIPE = REPO / "recipes" / "lab.toml"
Recipe.rules = RULES  # read by schema.load_table and schema.describe

__all__ = ["BootSection", "DeviceSpec", "DiskSpec", "ExternalModuleSpec", "FirmwareSpec", "HostSection", "InstallerSpec", "KernelSection",
           "LabSection", "Recipe", "TuningSpec", "VmSpec", "VncSpec", "RULES", "REPO", "DEFAULT_RECIPE", "load_recipe",
           "recipe_path"]


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
    keys = [d.address or d.id for d in recipe.devices]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise RecipeError(f"{file}: devices[{i}] repeats devices[{keys.index(key)}] ({key}); list each device once")
    names = set()
    for i, vm in enumerate(recipe.vms):
        if vm.name in names:   # its form is RULES["vms.name"]
            raise RecipeError(f"{file}: vms[{i}].name = {vm.name!r}: two VMs share this name; names must be unique")
        names.add(vm.name)
    _validate_external(recipe, file)
    for key in recipe.kernel.config:
        if not key.isupper() or key.startswith("CONFIG_"):
            raise RecipeError(f"{file}: kernel.config.{key}: write Kconfig symbols in upper case without CONFIG_, e.g. VFIO_PCI = \"m\"")


# What lfspass passes to an external module's kbuild itself (kernel/external.py): a recipe must not move them.
RESERVED_MAKE_VARS = ("M", "O", "KBUILD_EXTMOD", "MO", "INSTALL_MOD_PATH", "INSTALL_MOD_DIR", "INSTALL_MOD_STRIP",
                      "DEPMOD", "CC", "MAKEFLAGS")


def _validate_external(recipe: Recipe, file: Path) -> None:
    names: list[str] = []
    for i, mod in enumerate(recipe.kernel.external_modules):
        where = f"{file}: kernel.external_modules[{i}]"
        if mod.name in names:   # its form is RULES["kernel.external_modules.name"]
            raise RecipeError(f"{where}.name = {mod.name!r}: external_modules[{names.index(mod.name)}] has this "
                              "name too; names must be unique (each has its own updates/<name> folder)")
        names.append(mod.name)
        for j, arg in enumerate(mod.make_args):
            var = arg.split("=", 1)[0]
            if var in RESERVED_MAKE_VARS:
                raise RecipeError(f"{where}.make_args[{j}] = {arg!r}: {var} is lfspass's to set (the build copy, "
                                  "the kernel's O= tree and compiler, the staged install); remove it")


def load_recipe(path: str | os.PathLike | None = None) -> Recipe:
    """Read and check a recipe; relative paths resolve against the recipe's folder."""
    file = recipe_path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{file}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    except FileNotFoundError:
        raise RecipeError(f"{file}: no such recipe; pass recipe=PATH (doit) or --recipe PATH, or set LFSPASS_RECIPE") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{file}: not valid TOML ({exc}); fix the line it names") from None
    except OSError as exc:
        raise RecipeError(f"{file}: cannot read ({exc.strerror}); give a recipe file") from None
    base = file.resolve().parent
    recipe = load_table(Recipe, data, file, "", base)
    recipe.path = file
    _validate(recipe, file)
    return recipe
