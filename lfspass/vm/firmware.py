"""OVMF for a VM: CODE from the recipe, a download or QEMU's descriptors; a per-VM VARS copy kept forever."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from lfspass.diskspace import ensure_room
from lfspass.errors import VmError
from lfspass.recipe import FirmwareSpec
from lfspass.vm.guest_disk import private_dir

VARS_NAME = "OVMF_VARS.fd"
SEABIOS = Path("/usr/share/seabios/bios-256k.bin")  # what Debian's QEMU loads for a q35 machine without -bios
# An authenticated variable's header ends in its vendor GUID, then the UTF-16 name: PK in
# EFI_GLOBAL_VARIABLE's namespace, 44 header bytes before the GUID starting 0x55AA, state 0x3F (added).
_PK = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c").bytes_le + "PK".encode("utf-16-le") + b"\0\0"
_HEADER = 44


@dataclass(frozen=True)
class Firmware:
    """The two pflash images a VM boots with, and what the CODE build needs."""

    code: Path            # shared, read-only
    vars_template: Path   # copied once into the VM's folder
    vars: Path            # the VM's own UEFI variables
    secure_boot: bool = False
    requires_smm: bool = False
    bios: bool = False    # firmware.type = "bios": QEMU's default SeaBIOS (code names it), no pflash, no VARS


def _matches(desc: dict, secure_boot: bool) -> bool:
    """x86_64 + q35 + uefi on flash, with Secure Boot exactly when asked."""
    if "uefi" not in desc.get("interface-types", []):
        return False
    mapping = desc.get("mapping", {})
    if mapping.get("device") != "flash" or "nvram-template" not in mapping:
        return False
    targets = desc.get("targets", [])
    if not any(t.get("architecture") == "x86_64" and any(m.startswith("pc-q35") for m in t.get("machines", []))
               for t in targets):
        return False
    return ("secure-boot" in desc.get("features", [])) == secure_boot


def find_descriptor(folder: Path, secure_boot: bool = False) -> tuple[Path, dict]:
    """The first matching descriptor in QEMU's priority order (file-name order, as QEMU and libvirt read them)."""
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".json")
    except OSError:
        files = []
    for file in files:
        try:
            desc = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # a broken descriptor is skipped, as QEMU's tools do
        if _matches(desc, secure_boot):
            return file, desc
    kind = "Secure Boot " if secure_boot else ""
    raise VmError(f"no {kind}x86_64 q35 UEFI firmware descriptor in {folder}: install Debian's ovmf "
                  "(apt-get install ovmf), or set [vms.firmware] code and vars (or code_url + code_sha256)")


def vm_firmware(spec: FirmwareSpec, vm_dir: Path, fetched: dict[str, Path] | None = None) -> Firmware:
    """Resolve CODE and VARS-template paths; ``fetched`` maps 'code'/'vars' to downloaded files."""
    if spec.type == "bios":
        return Firmware(code=SEABIOS, vars_template=SEABIOS, vars=vm_dir / VARS_NAME, bios=True)
    fetched = fetched or {}
    code = Path(spec.code) if spec.code else fetched.get("code")
    template = Path(spec.vars) if spec.vars else fetched.get("vars")
    secure, smm = spec.secure_boot, False
    if code is None or template is None:
        _file, desc = find_descriptor(Path(spec.descriptors), spec.secure_boot)
        mapping = desc["mapping"]
        code = code or Path(mapping["executable"]["filename"])
        template = template or Path(mapping["nvram-template"]["filename"])
        smm = "requires-smm" in desc.get("features", [])
    return Firmware(code=code, vars_template=template, vars=vm_dir / VARS_NAME, secure_boot=secure,
                    requires_smm=smm or secure)


def download_targets(spec: FirmwareSpec, vm_dir: Path) -> dict[str, tuple[str, str, Path]]:
    """'code'/'vars' -> (url, sha256, destination) for the firmware the recipe downloads."""
    out = {}
    for part in ("code", "vars"):
        url, sha = getattr(spec, f"{part}_url"), getattr(spec, f"{part}_sha256")
        if url and not getattr(spec, part):
            out[part] = (url, sha, vm_dir / "firmware" / f"OVMF_{part.upper()}.fd")
    return out


def check_files(fw: Firmware) -> None:
    if fw.bios:
        if not fw.code.is_file():
            raise VmError(f"SeaBIOS {fw.code} does not exist: apt-get install seabios (firmware.type = \"bios\")")
        return
    for what, path in (("CODE", fw.code), ("VARS template", fw.vars_template)):
        if not path.is_file():
            raise VmError(f"OVMF {what} {path} does not exist: install Debian's ovmf or fix [vms.firmware]")


def pk_enrolled(path: Path) -> bool:
    """True when the variable store holds a live Platform Key (Secure Boot keys are enrolled)."""
    data = path.read_bytes()
    at = data.find(_PK)
    while at >= 0:
        if at >= _HEADER and data[at - _HEADER:at - _HEADER + 3] == b"\xaa\x55\x3f":
            return True
        at = data.find(_PK, at + 1)
    return False


def check_vars(fw: Firmware) -> None:
    """Everything prepare_vars would refuse, checked before any VM file is written."""
    check_files(fw)
    if fw.bios:
        return  # SeaBIOS keeps no variables
    if fw.secure_boot and not pk_enrolled(fw.vars_template):
        raise VmError(f"secure_boot = true but the VARS template {fw.vars_template} has no Secure Boot keys enrolled "
                      "(the guest would boot unsigned code): use one with keys, e.g. /usr/share/OVMF/OVMF_VARS_4M.ms.fd, "
                      "or leave [vms.firmware] vars empty")
    if not fw.vars.exists():
        return
    have, want = fw.vars.stat().st_size, fw.vars_template.stat().st_size
    if have != want:
        raise VmError(f"{fw.vars} is {have} bytes but the firmware's VARS template {fw.vars_template} is {want}: "
                      f"they belong to different OVMF builds; move {fw.vars} away to start with fresh UEFI "
                      "variables, or go back to the firmware it was made for")
    if fw.secure_boot and not pk_enrolled(fw.vars):
        raise VmError(f"secure_boot = true but {fw.vars} has no Secure Boot keys enrolled (it was made from a plain "
                      f"template; the guest would boot unsigned code): keep the old one with `mv {fw.vars} "
                      f"{fw.vars}.plain` and run again, lfspass then makes a new one from {fw.vars_template}")


def prepare_vars(fw: Firmware) -> bool:
    """Copy the VARS template to the VM's folder once; True when it was made now.

    The copy holds the guest's UEFI variables (boot entries, Secure Boot keys), so an
    existing one is never replaced, not even when the recipe names another template.
    """
    check_vars(fw)
    if fw.bios or fw.vars.exists():
        return False
    private_dir(fw.vars.parent)
    ensure_room(fw.vars.parent, fw.vars_template.stat().st_size, f"{fw.vars} (a copy of {fw.vars_template})",
                VmError, "free space there or set [[vms]] dir elsewhere")
    tmp = fw.vars.with_name(f".{fw.vars.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(fw.vars_template, tmp)
        os.chmod(tmp, 0o600)  # the guest's UEFI variables: its owner only
        # A link fails when the name exists: a VARS file that appeared meanwhile is kept.
        try:
            os.link(tmp, fw.vars)
        except FileExistsError:
            return False
    except OSError as exc:
        raise VmError(f"cannot make {fw.vars} from {fw.vars_template}: {exc.strerror or exc}; nothing was kept: "
                      "free space there or fix the folder's rights, then re-run") from None
    finally:
        tmp.unlink(missing_ok=True)
    return True
