"""What a kernel build's inputs and manifest name besides the recipe: plugin versions, tool versions."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lfspass import __version__
from lfspass.plugins import get_plugin_manager


def plugin_versions() -> dict[str, str]:
    """name -> version of every registered plugin (built-ins carry lfspass's version)."""
    pm = get_plugin_manager()
    dists = {id(p): d.version for p, d in pm.list_plugin_distinfo()}
    return {name: dists.get(id(p)) or getattr(p, "__version__", None) or __version__
            for name, p in sorted(pm.list_name_plugin()) if p is not None}


def tool_version(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.split("\n", 1)[0]
    except OSError:
        return ""


def gcc_identity() -> str:
    """Cheap stand-in for the compiler version at load time (the manifest runs gcc itself)."""
    gcc = shutil.which("gcc")
    if not gcc:
        return ""
    st = Path(gcc).resolve().stat()
    return f"{Path(gcc).resolve()}:{st.st_size}:{st.st_mtime_ns}"
