"""PCI ids and addresses: parse, normalise, and say exactly what is wrong with bad ones."""
from __future__ import annotations

import re

from lfspass.errors import PciIdError

_ID = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")
_ADDR = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$")


def parse_pci_id(text: object, where: str = "") -> str:
    """Return ``vvvv:dddd`` in lower case, or raise PciIdError naming ``where``.

    ``where`` says where the value came from (``recipes/x.toml [[devices]] id``) so
    the one-line error can point at it.
    """
    at = f"{where}: " if where else ""
    if not isinstance(text, str) or not text.strip():
        raise PciIdError(f"{at}PCI id {text!r} is empty; write vendor:device as 4+4 hex digits, e.g. 10de:1e37")
    m = _ID.match(text.strip())
    if not m:
        parts = re.split(r"[:\-]", text.strip(), maxsplit=1)
        hint = ""
        if len(parts) == 2 and all(re.fullmatch(r"[0-9a-fA-F]+", p) for p in parts):
            bad = [p for p in parts if len(p) != 4]
            hint = f" ('{bad[0]}' has {len(bad[0])} hex digits, not 4)" if bad else " (use ':' between vendor and device)"
        raise PciIdError(
            f"{at}PCI id '{text}' is malformed{hint}; write vendor:device as 4+4 hex digits, "
            "e.g. 10de:1e37 (see `lspci -nn`)"
        )
    return f"{m.group(1).lower()}:{m.group(2).lower()}"


def parse_pci_address(text: object, where: str = "") -> str:
    """Return the full ``dddd:bb:dd.f`` form of a PCI address, or raise PciIdError."""
    at = f"{where}: " if where else ""
    m = _ADDR.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise PciIdError(
            f"{at}PCI address {text!r} is malformed; write [domain:]bus:slot.function, "
            "e.g. 0000:82:00.0 or 82:00.0 (see `lspci -D`)"
        )
    dom = (m.group(1) or "0000").lower()
    return f"{dom}:{m.group(2).lower()}:{m.group(3).lower()}.{m.group(4)}"


def short_address(address: str) -> str:
    """``0000:82:00.0`` -> ``82:00.0`` (the form lspci and QEMU's host= print)."""
    return address[5:] if address.startswith("0000:") else address
