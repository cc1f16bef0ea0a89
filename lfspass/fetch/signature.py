"""Signed checksum lists: gpgv on a detached signature, then the sum for one file name."""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from lfspass.errors import DownloadError
from lfspass.fsutil import require_tool

# Debian release media are signed by the "Debian CD signing key"; debian-keyring ships it
# in its role-keys ring (checked: `gpg --show-keys debian-role-keys.gpg`).
DEBIAN_CD_KEYRING = Path("/usr/share/keyrings/debian-role-keys.gpg")
DEBIAN_CD_FINGERPRINT = "DF9B9C49EAA9298432589D76DA87E80D6294BE9B"

_SUM_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]{64})\s+\*?(?P<name>.+?)\s*$")


def normalize_fingerprint(fpr: str) -> str:
    """'DF9B 9C49 …' or '0xdf9b…' -> 'DF9B9C49…' (40 hex digits), else DownloadError."""
    clean = re.sub(r"\s+", "", fpr).upper().removeprefix("0X")
    if not re.fullmatch(r"[0-9A-F]{40}", clean):
        raise DownloadError(f"fingerprint {fpr!r} is not 40 hex digits; copy it from `gpg --show-keys KEYRING`")
    return clean


def verify_detached(data: Path, signature: Path, keyring: Path | None = None,
                    fingerprint: str | None = None, *, what: str | None = None) -> str:
    """Check ``signature`` over ``data`` with gpgv; return the signing key's primary fingerprint.

    Without ``keyring`` the Debian CD signing key is required (keyring *and* fingerprint),
    so a key that merely sits in the same ring cannot stand in for it.  With a keyring
    and no fingerprint, any key in that ring is accepted: the user chose the ring.
    """
    what = what or str(data)
    if keyring is None:
        keyring = DEBIAN_CD_KEYRING
        fingerprint = fingerprint or DEBIAN_CD_FINGERPRINT
    expected = normalize_fingerprint(fingerprint) if fingerprint else None
    keyring = Path(keyring).resolve()  # gpgv looks a relative name up in its home, not here
    if not keyring.is_file():
        raise DownloadError(
            f"keyring {keyring} not found: apt-get install debian-keyring, or pass --keyring FILE"
        )
    gpgv = require_tool("gpgv", "gpgv")
    with tempfile.TemporaryDirectory(prefix="lfspass-gpgv-") as home:
        # A throwaway home: gpgv must not read or create ~/.gnupg of whoever runs us.
        proc = subprocess.run(
            [gpgv, "--homedir", home, "--status-fd", "1", "--keyring", str(keyring),
             str(signature), str(data)],
            capture_output=True, text=True,
        )
    status = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("[GNUPG:] ")]
    good = any(f and f[0] == "GOODSIG" for f in status)
    valid = [f[1:] for f in status if f and f[0] == "VALIDSIG" and len(f) > 1]
    if proc.returncode != 0 or not good or not valid:
        # gpgv's first line that is not a "Signature made / using key" note says what failed.
        notes = ("Signature made", "using ", "issuer ", "Good signature")
        reasons = [ln.split(":", 1)[1].strip() for ln in proc.stderr.splitlines() if ln.startswith("gpgv:")]
        reason = next((r for r in reasons if not r.startswith(notes)), "no valid signature")
        raise DownloadError(
            f"{what}: signature does not verify against keyring {keyring} ({reason}); "
            "nothing was downloaded - check the checksum and signature URLs, "
            "or pass --keyring with the key that signed them"
        )
    # VALIDSIG <signing-key fpr> … <primary-key fpr>: accept either, a subkey may sign.
    signers = [(f[0], f[-1] if len(f) >= 10 else f[0]) for f in valid]
    if expected and not any(expected in pair for pair in signers):
        raise DownloadError(
            f"{what} is signed by key {signers[0][1]}, not by the expected key {expected}; "
            "nothing was downloaded - use an official mirror, or pass --keyring and --fingerprint for that key"
        )
    return signers[0][1]


def parse_sums(text: str, name: str, *, source: str = "SHA256SUMS") -> str:
    """The lower-case sha256 a ``sha256sum``-style list gives for file ``name``.

    Entries may be ``name``, ``*name`` (binary mode) or ``./sub/name``; an exact path
    match wins, then a unique basename match.
    """
    exact: set[str] = set()
    by_base: set[str] = set()
    listed: list[str] = []
    for line in text.splitlines():
        m = _SUM_LINE.match(line.strip())
        if not m:
            continue
        entry = m["name"].removeprefix("./")
        listed.append(entry)
        if entry == name.removeprefix("./"):
            exact.add(m["hex"].lower())
        if PurePosixPath(entry).name == PurePosixPath(name).name:
            by_base.add(m["hex"].lower())
    found = exact or by_base
    if len(found) == 1:
        return found.pop()
    if not found:
        shown = ", ".join(listed[:5]) + (", …" if len(listed) > 5 else "") if listed else "no sha256 lines"
        raise DownloadError(
            f"{source} lists no file named {name!r} (it lists: {shown}); "
            "check the URL's file name or pass --sha256 instead"
        )
    raise DownloadError(
        f"{source} gives {len(found)} different sums for {name!r}; name the file by its full path in the list"
    )
