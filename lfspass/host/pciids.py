"""PCI vendor, device, subsystem and class names from Debian's pci.ids, looked up lazily."""
from __future__ import annotations

import functools
import re
from pathlib import Path

# Debian package pci.ids installs the database here; pciutils reads the same file.
PCI_IDS = Path("/usr/share/misc/pci.ids")


@functools.lru_cache(maxsize=4)
def _text(path: str) -> str:
    """The whole database as one string (1.3 MB: reading it is ~1 ms, parsing all of it is not)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@functools.lru_cache(maxsize=512)
def _vendor_block(path: str, vendor: str) -> tuple[str | None, str]:
    """(vendor name, the indented lines under it).

    Only the vendors a host actually has are cut out, with a regex over the text,
    instead of parsing ~40,000 lines into dicts for every run.
    """
    text = _text(path)
    m = re.search(rf"^{re.escape(vendor)}  (.*)$", text, re.M)
    if not m:
        return None, ""
    start = m.end() + 1
    nxt = re.compile(r"^[^\t#\n]", re.M).search(text, start)
    return m.group(1).strip(), text[start: nxt.start() if nxt else len(text)]


@functools.lru_cache(maxsize=4096)
def _device(path: str, vendor: str, device: str) -> str | None:
    block = _vendor_block(path, vendor)[1]
    pos = block.find(f"\t{device}  ")
    while pos > 0 and block[pos - 1] != "\n":   # a subsystem line (two tabs) also contains "\tdddd  "
        pos = block.find(f"\t{device}  ", pos + 1)
    if pos < 0:
        return None
    end = block.find("\n", pos)
    return block[pos + len(device) + 3: end if end >= 0 else len(block)].strip()


@functools.lru_cache(maxsize=1)
def _classes(path: str) -> dict[str, str]:
    """'03' -> 'Display controller', '0302' -> '3D controller' (the 'C' section at the end)."""
    text = _text(path)
    out: dict[str, str] = {}
    pos = text.find("\nC ")
    base = ""
    for line in text[pos + 1:].splitlines() if pos >= 0 else ():
        if line.startswith("C "):
            base = line[2:4].lower()
            out[base] = line[4:].strip()
        elif line.startswith("\t") and not line.startswith("\t\t") and base:
            out[base + line[1:3].lower()] = line[3:].strip()
    return out


class PciIds:
    """Name lookups in one pci.ids file (a missing file gives no names, never an error)."""

    def __init__(self, path: str | Path = PCI_IDS) -> None:
        self.path = str(path)

    def vendor(self, vendor: str | None) -> str | None:
        return _vendor_block(self.path, vendor.lower())[0] if vendor else None

    def device(self, vendor: str | None, device: str | None) -> str | None:
        return _device(self.path, vendor.lower(), device.lower()) if vendor and device else None

    def subsystem(self, vendor: str | None, device: str | None, sub_vendor: str | None, sub_device: str | None) -> str | None:
        if not (vendor and device and sub_vendor and sub_device):
            return None
        block = _vendor_block(self.path, vendor.lower())[1]
        m = re.search(rf"^\t{re.escape(device.lower())}  .*$", block, re.M)
        if not m:
            return None
        for line in block[m.end() + 1:].splitlines():
            if not line.startswith("\t\t"):
                break
            if line[2:11].lower() == f"{sub_vendor.lower()} {sub_device.lower()}":
                return line[11:].strip()
        return None

    def class_name(self, class_code: int | None) -> str | None:
        """Name of the base+sub class of a 24-bit class code (0x030200 -> '3D controller')."""
        if class_code is None:
            return None
        classes = _classes(self.path)
        return classes.get(f"{class_code >> 8:04x}") or classes.get(f"{class_code >> 16:02x}")

    def long_name(self, vendor: str | None, device: str | None) -> str:
        """What ``lspci -nn`` prints between the class and the ids: vendor name + device name.

        Like lspci, an unknown device reads ``Device`` (the ids follow in brackets).
        """
        vname = self.vendor(vendor)
        dname = self.device(vendor, device) or "Device"
        return f"{vname} {dname}" if vname else "Device"
