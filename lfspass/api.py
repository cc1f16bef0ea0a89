"""The public API for plugins: the only lfspass module a plugin imports.

Everything here keeps its name and meaning across releases; the modules behind it may move.
A plugin writes ``from lfspass.api import hookimpl, Request, Check`` (``from lfspass import
hookimpl`` works too) and uses the helpers below for competing-driver softdeps and BAR checks.
"""
from __future__ import annotations

from lfspass import hookimpl
from lfspass.doctor.devices import HPE_BAR_FIX, OVMF_FIX, check_hda, label
from lfspass.doctor.gpu import bar_check, host_drivers, softdeps
from lfspass.errors import KconfigError, LfspassError
from lfspass.model import Check, Request, Status

__all__ = [
    "hookimpl", "Request", "Check", "Status", "LfspassError", "KconfigError",
    "softdeps", "host_drivers", "bar_check", "check_hda", "label", "HPE_BAR_FIX", "OVMF_FIX",
]
