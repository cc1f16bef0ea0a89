"""One file to download: where from, where to, how it is verified and how large it may be.

A stage's plan builds these (the VM's firmware and installer media, `lfspass fetch`'s command
line); ``lfspass.fetch.download.fetch_item`` reads them.  Importing this module loads no HTTP code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Download:
    """``url`` to ``dest``, verified by ``sha256`` or by a ``sums_url`` SHA256SUMS list (exactly one).

    The list's detached signature is ``signature_url`` (default: the list's URL + ``.sign``),
    checked with gpgv against ``keyring`` (and ``fingerprint`` when given).  ``size``: the exact
    length when known; ``max_size``: the cap on what is written, named ``max_size_key`` in errors.
    """

    url: str
    dest: Path
    sha256: str | None = None
    sums_url: str | None = None
    signature_url: str | None = None
    keyring: Path | None = None
    fingerprint: str | None = None
    size: int | None = None
    max_size: str | int | None = None
    max_size_key: str = "--max-size"
