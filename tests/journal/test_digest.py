"""The journal's digests: the typed value and run.json's words for it, both ways."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lfspass import journal
from lfspass.journal.digest import Digest


@pytest.mark.parametrize("text, kind, value", [
    (None, "absent", ""),
    ("ab" * 32, "file", "ab" * 32),
    ("link:../a b", "link", "../a b"),
    ("link:", "link", ""),
    ("tree:" + "cd" * 32, "tree", "cd" * 32),
])
def test_text_and_parse_are_inverse(text, kind, value) -> None:
    d = Digest.parse(text)
    assert (d.kind, d.value) == (kind, value)
    assert d.text() == text


def test_digest_of_each_kind_of_path(tmp_path: Path) -> None:
    (tmp_path / "d/sub").mkdir(parents=True)
    (tmp_path / "d/f").write_text("x")
    os.symlink("sub", tmp_path / "d/ln")
    assert journal.digest(tmp_path / "d/f") == Digest("file", "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")
    assert journal.digest(tmp_path / "d/ln").text() == "link:sub"
    assert journal.digest(tmp_path / "nothing") == Digest("absent")
    assert journal.tree_listing(tmp_path / "d") == {"f": journal.digest(tmp_path / "d/f").value, "ln": "link:sub"}
    assert journal.digest(tmp_path / "d").kind == "tree"
