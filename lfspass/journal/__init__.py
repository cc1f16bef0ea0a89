"""Host-edit journal: every path lfspass writes under a root, its previous content and sha256
before/after, kept in the root's state folder so that `lfspass rollback` can undo a run.

One run is one process (one `doit`, one `lfspass boot try`), opened at its first write;
`run()` opens an explicit one.  The parts: ``state`` (where the journal lives), ``digest``
(what a path holds, as run.json says it), ``tree`` (folder copies, swaps, removals), ``runs``
(the Run record, ``editing``), ``write`` (the journaled writes); ``rollback`` undoes runs,
``sysfs`` journals a PCI device's driver, ``holders`` says who holds a device.
"""
from __future__ import annotations

from lfspass.journal.digest import Digest, digest, tree_listing
from lfspass.journal.runs import Run, current_run, editing, run
from lfspass.journal.state import OWN_STATE, STATE_DIR, journal_dir, state_dir
from lfspass.journal.tree import link_tree, remove_path, swap_dir
from lfspass.journal.write import copy_atomic, remove, replace_dir, write_atomic, write_link

__all__ = ["Digest", "OWN_STATE", "Run", "STATE_DIR", "copy_atomic", "current_run", "digest", "editing",
           "journal_dir", "link_tree", "remove", "remove_path", "replace_dir", "run", "state_dir", "swap_dir",
           "tree_listing", "write_atomic", "write_link"]
