"""The valid form of recipe keys whose type alone says too little (schema.py enforces them on load)."""
from __future__ import annotations

import re

from lfspass.errors import VmError
from lfspass.pci import parse_pci_address, parse_pci_id
from lfspass.schema import Rule

SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str, where: str, default_unit: str = "") -> int:
    """'64G', '512M', '1T', '4096' -> bytes (binary units, as qemu-img and QEMU -m read them)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise VmError(f"{where} = {text!r}: expected a size such as 512M, 64G or 1T")
    unit = m.group(2).upper() or default_unit
    return int(m.group(1)) * SIZE_UNITS[unit]


SIZE = Rule(r"[1-9][0-9]{0,12}[KMGTkmgt]?(i?B)?", "a size such as 512M, 4G or 1T")
SHA256 = Rule(r"([0-9a-fA-F]{64})?", "empty or 64 hex digits")
URL = Rule(r"((https?|file)://\S+|/\S*)?", "empty, an http(s):// or file:// URL, or an absolute path")
GRUB_PATH = Rule(r"(/[A-Za-z0-9_.+@%=:,-][A-Za-z0-9_.+@%=:,/-]*)?", "empty or an absolute path as GRUB sees it, without spaces or quotes")
HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
# The valid form of keys whose type alone says too little; schema.py enforces these on load and
# prints them in the recipe reference, docs/reference/recipe.md (python -m lfspass.recipe).
RULES: dict[str, Rule] = {
    "kernel.version": Rule(r"([0-9]+\.[0-9]+[0-9A-Za-z.+_-]*)?", "empty or a release such as 6.10.5"),
    "kernel.lfs_version": Rule(r"[0-9A-Za-z.+_-]{1,32}", "letters, digits, '.', '+', '_', '-'"),
    "kernel.jobs": Rule(range=(0, 4096)),
    # The kernel keeps 55 characters of a module's name (MODULE_NAME_LEN); INSTALL_MOD_DIR takes no '%' or ':'.
    "kernel.external_modules.name": Rule(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,54}",
                                         "1-55 letters, digits, '_', '-' (not first), e.g. kvmfr"),
    # make expands '$' in a command-line value ($(shell ...)): no '$', no shell characters.
    "kernel.external_modules.make_args": Rule(r"[A-Za-z_][A-Za-z0-9_]*=[^\s'\"\\`$;&|<>()*?]*",
                                              "each VAR=value: a make variable, '=', a value without spaces, "
                                              "quotes, '$' or shell characters"),
    "boot.fs_uuid": Rule(r"([0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}|[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12})?",
                         "empty or a filesystem UUID as blkid prints it (or a FAT serial such as 1A2B-3C4D)"),
    "boot.microcode": GRUB_PATH,
    "boot.initrd": GRUB_PATH,
    "boot.tries": Rule(range=(1, 9)),
    "boot.grub_cfg": Rule(r"(?!/)(?!(.*/)?\.\.(/|$))[^\s]+", "a relative path below the install root, without '..'"),
    "devices.address": Rule(r"([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]|",
                            "empty or a PCI address such as 82:00.0 or 0000:82:00.0", explain=parse_pci_address),
    "devices.id": Rule(r"([0-9a-fA-F]{4}:[0-9a-fA-F]{4})?", "empty or vendor:device such as 10de:1e37",
                       explain=parse_pci_id),
    "vms.name": Rule(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", "1-64 letters, digits, '-', '_', '.' (not first)"),
    "vms.memory": SIZE,
    "vms.cpus": Rule(range=(1, 1024)),
    "vms.devices": Rule(r"([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]|[0-9a-fA-F]{4}:[0-9a-fA-F]{4}",
                        "each a PCI address or a vendor:device id from [[devices]]"),
    "vms.bridge": Rule(r"[A-Za-z0-9_.-]{1,15}", "an interface name (1-15 letters, digits, '_', '.', '-')"),
    "vms.mac": Rule(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}|", "empty or a MAC such as 52:54:00:12:34:56"),
    "vms.firmware.code": Rule(exists="file"),
    "vms.firmware.vars": Rule(exists="file"),
    "vms.firmware.code_url": URL,
    "vms.firmware.code_sha256": SHA256,
    "vms.firmware.vars_url": URL,
    "vms.firmware.vars_sha256": SHA256,
    "vms.firmware.code_max_size": SIZE,
    "vms.firmware.vars_max_size": SIZE,
    "vms.disk.size": SIZE,
    "vms.vnc.listen": Rule(rf"{HOSTNAME}|[0-9A-Fa-f:.]{{2,45}}", "an IPv4 or IPv6 address or a host name"),
    "vms.vnc.display": Rule(range=(0, 99)),
    "vms.vnc.password_file": Rule(exists="file"),
    "vms.tuning.cpus": Rule(range=(0, 8191)),
    "vms.installer.iso": Rule(exists="file"),
    "vms.installer.iso_url": URL,
    "vms.installer.iso_sha256": SHA256,
    "vms.installer.iso_max_size": SIZE,
    "vms.installer.sums_url": URL,
    "vms.installer.signature_url": URL,
    "vms.installer.keyring": Rule(exists="file"),
    "vms.installer.preseed": Rule(exists="file"),
    "vms.installer.mirror": Rule(rf"({HOSTNAME}|https?://[^\s'\\]+)?",
                                 "empty, a host name, or (source = \"image\") an archive URI such as http://HOST/debian"),
    "vms.installer.suite": Rule(r"[a-z][a-z0-9-]{0,31}|", "empty or a Debian release name such as bookworm"),
    "vms.installer.packages": Rule(r"[a-z0-9][a-z0-9+.-]{1,99}", "each a Debian package name such as less"),
    "vms.installer.user": Rule(r"[a-z_][a-z0-9_-]{0,31}", "a lower-case login such as debian"),
    "vms.installer.password_hash": Rule(r"(\$[0-9a-z]{1,2}\$[./A-Za-z0-9$=,]{2,}|!|\*)?",
                                        "empty or a crypt(3) hash such as $6$salt$hash (mkpasswd -m sha-512)"),
    "vms.installer.ssh_key": Rule(r"((ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( [^'\\]*)?)?",
                                  "empty or one public key line: TYPE BASE64 [comment], no quotes or backslashes"),
    "vms.installer.timeout": Rule(range=(1, 10080)),
    "vms.installer.silence": Rule(range=(0, 86400)),
    "lab.timeout": Rule(range=(1, 86400)),
    "lab.memory": SIZE,
}
