"""The one exception family lfspass raises for expected failures, and the exit code each means.

Three families, one exit code each: CheckFailed (1, a check said no), InputError (2, bad
input or a state lfspass refuses to change) and ToolFailed (3, an external program failed or
is missing).  The table of which error means what, stage by stage, is
docs/reference/exit-codes.md (tests/test_docs.py keeps it in step with these classes).

Every message is one line that names the input (file, key, value), what was expected, and
what to do next; the CLI and the doit reporter print it as ``error: …`` without a traceback.
The stage classes below (RecipeError, KconfigError, BuildError, …) each belong to one family;
raise the most specific one.
"""
from __future__ import annotations


class LfspassError(Exception):
    """Base of every expected failure; its ``exit_code`` says which family it belongs to."""

    exit_code = 2

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        """The message folded onto a single line."""
        return " ".join(str(self).split())


class CheckFailed(LfspassError):
    """A check said no (doctor, a lab verdict, boot confirm, a checksum): exit 1."""

    exit_code = 1


class InputError(LfspassError):
    """Bad input the user can fix (recipe, ids, requests, paths, refused states): exit 2."""

    exit_code = 2


class ToolFailed(LfspassError):
    """An external program failed or is not installed: exit 3."""

    exit_code = 3


def family_of(exc: LfspassError) -> type[LfspassError]:
    """The family whose exit code ``exc`` carries (to re-raise it with more said, same code)."""
    return {1: CheckFailed, 2: InputError, 3: ToolFailed}.get(exc.exit_code, LfspassError)


# Stage errors, each in one family.

class RecipeError(InputError):
    """A recipe file is missing, unparsable, or has a bad key or value."""


class PciIdError(InputError):
    """A PCI id or address is malformed or names no device on the host."""


class PluginError(InputError):
    """A plugin could not be loaded or broke a hook contract."""


class TemplateError(InputError):
    """A template asked for a variable the plan does not provide."""


class KconfigError(InputError):
    """A Kconfig request is unknown or was refused by the kernel's dependencies."""


class HostError(InputError):
    """A host root (live or saved) cannot be read."""


class VmError(InputError):
    """A VM's firmware, disk or launcher cannot be prepared from what the recipe says."""


class BuildError(ToolFailed):
    """The kernel build or install failed (the message points at the kept log)."""


class DownloadError(CheckFailed):
    """A download failed, or its checksum or signature did not verify."""


class FetchRequestError(InputError):
    """A download asked for in a way that cannot work: a URL, checksum, option or LFSPASS_* value."""


class ToolMissing(ToolFailed):
    """An external program lfspass relies on is not installed."""

    def __init__(self, tool: str, package: str) -> None:
        super().__init__(f"'{tool}' not found on PATH: install it (Debian: apt-get install {package})")
        self.tool = tool
        self.package = package
