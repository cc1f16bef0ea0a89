"""A marked block inside a user's file: replace only the block, keep every other byte."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from lfspass import fsutil, journal
from lfspass.errors import HostError, InputError

BEGIN = "### BEGIN lfspass"
END = "### END lfspass"


def split_block(text: str, file: Path) -> tuple[str, str | None, str]:
    """(before, block body or None, after); the marker lines themselves are not returned."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.startswith(END)]
    if not starts and not ends:
        return text, None, ""
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise InputError(
            f"{file}: the '{BEGIN}' / '{END}' markers are damaged (found {len(starts)} begin, {len(ends)} end); "
            "restore one pair or delete the lfspass block by hand, then re-run")
    s, e = starts[0], ends[0]
    return "".join(lines[:s]), "".join(lines[s + 1:e]), "".join(lines[e + 1:])


def _read(file: Path) -> str | None:
    """The text of ``file``; None when it is not there; one clear error when it cannot be read as text."""
    try:
        return file.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise HostError(f"{file}: is a folder, not a file; move it aside, then re-run") from None
    except UnicodeDecodeError as exc:
        raise HostError(f"{file}: not text (byte {exc.start} is not UTF-8); check it is the file meant, "
                        "then re-run") from None
    except OSError as exc:
        raise HostError(f"{file}: cannot be read ({exc.strerror or exc}); fix its permissions, then re-run") from None


def read_block(file: Path) -> str | None:
    """The current block body of ``file`` (None if the file or block is absent)."""
    text = _read(file)
    return None if text is None else split_block(text, file)[1]


def write_block(file: Path, body: str, note: str, header: str = "",
                check: Callable[[str], None] | None = None, mode: int | None = None,
                root: Path | None = None) -> bool:
    """Put ``body`` between the markers in ``file``; True when the file changed.

    A file without a block gets it appended (after ``header`` when the file is new);
    lines outside the block are kept byte for byte.  ``check`` sees the complete new
    text before anything is written and raises to refuse it.
    """
    if root is not None:
        file = fsutil.beneath(root, file)   # a link is followed inside the root, refused out of it
    text = _read(file)
    if text is None:
        text = header
    before, _, after = split_block(text, file)
    if before and not before.endswith("\n"):
        before += "\n"
    if not body.endswith("\n"):
        body += "\n"
    new = f"{before}{BEGIN} ({note}) ###\n{body}{END} ###\n{after}"
    if check is not None:
        check(new)
    if root is None:
        return fsutil.write_atomic(file, new, mode)
    return journal.write_atomic(root, file, new, mode)
