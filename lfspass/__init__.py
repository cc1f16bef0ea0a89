"""lfspass: GPU passthrough on a hand-built Linux host as one reproducible doit build."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pluggy

    #: Marker for plugin hook implementations: ``from lfspass import hookimpl``.
    hookimpl: pluggy.HookimplMarker


def __getattr__(name: str) -> Any:
    """``hookimpl`` is made on first use: commands that load no plugin (kconfig) skip importing pluggy."""
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker("lfspass")
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(f"module 'lfspass' has no attribute {name!r}")


__all__ = ["hookimpl", "__version__"]
