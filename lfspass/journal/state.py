"""Where a root keeps lfspass's state: the state folder, the journal under it, and what is never journaled."""
from __future__ import annotations

import os
from pathlib import Path

STATE_DIR = "var/lib/lfspass"
# lfspass's own bookkeeping there; VM folders (var/lib/lfspass/vms) hold launchers, which are journaled.
OWN_STATE = (f"{STATE_DIR}/journal", f"{STATE_DIR}/boot.json")


def state_dir(root: str | os.PathLike) -> Path:
    """The root's lfspass state folder (never journaled itself)."""
    return Path(root) / STATE_DIR


def journal_dir(root: str | os.PathLike) -> Path:
    return state_dir(root) / "journal"
