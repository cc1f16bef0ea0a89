"""The one exception family lfspass raises for expected bad input."""
from __future__ import annotations


class LfspassError(Exception):
    """Base of every error a user can fix.

    The CLI and the doit reporter print ``error: <message>`` on one line and exit
    non-zero without a traceback.  A message names the input (file, key, value),
    what was expected, and what to do next.
    """

    exit_code = 2  # `lfspass` exits 2 for bad input, 1 for a run that failed (BuildError, DownloadError)

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        """The message folded onto a single line."""
        return " ".join(str(self).split())


class RecipeError(LfspassError):
    """A recipe file is missing, unparsable, or has a bad key or value."""


class PciIdError(LfspassError):
    """A PCI id or address is malformed or names no device on the host."""


class PluginError(LfspassError):
    """A plugin could not be loaded or broke a hook contract."""


class TemplateError(LfspassError):
    """A template asked for a variable the plan does not provide."""


class KconfigError(LfspassError):
    """A Kconfig request is unknown or was refused by the kernel's dependencies."""


class BuildError(LfspassError):
    """The kernel build or install failed (the message points at the kept log)."""

    exit_code = 1


class DownloadError(LfspassError):
    """A download failed, or its checksum or signature did not verify."""

    exit_code = 1


class HostError(LfspassError):
    """A host root (live or saved) cannot be read."""


class VmError(LfspassError):
    """A VM's firmware, disk or launcher cannot be prepared."""


class ToolMissing(LfspassError):
    """An external program lfspass relies on is not installed."""

    def __init__(self, tool: str, package: str) -> None:
        super().__init__(f"'{tool}' not found on PATH: install it (Debian: apt-get install {package})")
        self.tool = tool
        self.package = package
