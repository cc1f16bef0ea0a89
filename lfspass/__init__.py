"""lfspass: GPU passthrough on a hand-built Linux host as one reproducible doit build."""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``from lfspass import hookimpl``.
hookimpl = pluggy.HookimplMarker("lfspass")

__all__ = ["hookimpl", "__version__"]
