"""BTF that two builds agree on: the tree's pahole flags, without the parallel encoding that reorders types.

``DEBUG_INFO_BTF`` runs pahole over vmlinux and every module.  pahole 1.22 added ``-j``
(parallel encoding), whose type order depends on thread timing until 1.27 added
``--btf_features=+reproducible_build``.  Trees since 6.8 (scripts/Makefile.btf) leave ``-j``
out themselves when ``KBUILD_BUILD_TIMESTAMP`` is set, as lfspass always sets it; older trees
(6.1's scripts/pahole-flags.sh) add ``-j`` for any pahole from 1.22 on.  For those, the build
gets ``PAHOLE_FLAGS`` on make's command line: exactly what the tree's own script prints for the
installed pahole, ``-j`` removed (a command-line variable overrides the Makefile's).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from lfspass.errors import BuildError
from lfspass.model import config_values

_PARALLEL = re.compile(r"^-j\d*$")


def uses_btf(config: Path) -> bool:
    try:
        return config_values(config.read_text(errors="replace")).get("DEBUG_INFO_BTF") == "y"
    except OSError:
        return False


def make_vars(tree: Path, config: Path) -> list[str]:
    """``["PAHOLE_FLAGS=..."]`` for a BTF build of a tree whose pahole flags include ``-j``; else []."""
    script = tree / "scripts" / "pahole-flags.sh"
    if not uses_btf(config) or not script.is_file() or shutil.which("pahole") is None:
        return []   # no BTF; a tree that decides itself (Makefile.btf); no pahole: kbuild says so
    proc = subprocess.run(["sh", str(script.resolve())], cwd=tree, capture_output=True, text=True,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PAHOLE": "pahole", "LC_ALL": "C"})
    if proc.returncode != 0:
        raise BuildError(f"{script} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-200:]}; "
                         "check that `pahole --version` runs (apt-get install dwarves)")
    flags = proc.stdout.split()
    kept = [f for f in flags if not _PARALLEL.match(f)]
    return [f"PAHOLE_FLAGS={' '.join(kept)}"] if kept != flags else []
