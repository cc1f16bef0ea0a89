"""What a path holds, as the journal records it: a typed ``Digest`` and its on-disk text.

In run.json an entry's ``before``/``after`` is the sha256 of a file, ``link:<target>`` for a
symlink, ``tree:<sha256 of the listing>`` for a folder, or null when the path is absent;
``Digest.text`` and ``Digest.parse`` are that format, both ways, so old journals still read.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lfspass import fsutil

Kind = Literal["file", "link", "tree", "absent"]
_PREFIX = {"link": "link:", "tree": "tree:"}


@dataclass(frozen=True)
class Digest:
    """``kind`` file (value: sha256), link (value: the target), tree (value: sha256 of the listing), absent."""

    kind: Kind
    value: str = ""

    def text(self) -> str | None:
        """The journal's words for it (None: absent)."""
        if self.kind == "absent":
            return None
        return _PREFIX.get(self.kind, "") + self.value

    @classmethod
    def parse(cls, text: str | None) -> Digest:
        """The inverse of ``text``."""
        if text is None:
            return cls("absent")
        if text.startswith(_PREFIX["link"]):
            return cls("link", text.removeprefix(_PREFIX["link"]))
        if text.startswith(_PREFIX["tree"]):
            return cls("tree", text.removeprefix(_PREFIX["tree"]))
        return cls("file", text)


def tree_listing(top: Path) -> dict[str, str]:
    """relative path -> sha256 (files) or 'link:<target>' below a folder."""
    out: dict[str, str] = {}
    for p, folder in fsutil.walk_tree(top):
        if not folder:
            d = Digest("link", os.readlink(p)) if p.is_symlink() else Digest("file", fsutil.sha256_file(p))
            out[str(p.relative_to(top))] = d.text() or ""
    return out


def digest(path: Path) -> Digest:
    """What ``path`` holds: a symlink's target, a folder's listing hash, a file's sha256, or absent."""
    if path.is_symlink():
        return Digest("link", os.readlink(path))
    if path.is_dir():
        listing = json.dumps(tree_listing(path), sort_keys=True).encode()
        return Digest("tree", hashlib.sha256(listing).hexdigest())
    if path.is_file():
        return Digest("file", fsutil.sha256_file(path))
    return Digest("absent")
