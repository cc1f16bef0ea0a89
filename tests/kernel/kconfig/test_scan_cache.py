"""The scan cache's index is taken on trust while conf runs: an edit of the tree since it was
written is still read (the check runs alongside conf; what the index decided is redone)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfspass.kernel.kconfig import scan_cache
from lfspass.kernel.kconfig.configure import configure
from lfspass.model import Request

TREE = """\
mainmenu "Cache $(ARCH) tree"

config A
	bool "A"

config NUM
	int "a number"
	default 5
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the module: the kernel's conf that reads these trees is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cached_tree(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tree configured once: its scan is in the cache on disk, and not in memory."""
    monkeypatch.setenv("LFSPASS_CACHE", str(cache))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Kconfig").write_text(TREE)
    configure(tree, tmp_path / "config", [Request("A", "y")], base=tmp_path / "base")
    scan_cache._MEM.clear()   # the next configure reads the disk cache, as a new process does
    return tree


@pytest.fixture(autouse=True)
def _base(tmp_path: Path) -> None:
    (tmp_path / "base").write_text("")


def _index_kinds(tree: Path) -> dict:
    """The kinds in the index line of ``tree``'s cache file."""
    text = scan_cache.cache_file(tree.resolve(), "x86_64").read_text()
    return json.loads(text.split("\n", 1)[0])["kinds"]


def test_a_symbol_added_since_the_cache_was_written_can_be_requested(cached_tree: Path, tmp_path: Path) -> None:
    (cached_tree / "Kconfig").write_text(TREE + '\nconfig NEW\n\tbool "new"\n')
    cfg = tmp_path / "config"
    configure(cached_tree, cfg, [Request("A", "y"), Request("NEW", "y")], base=tmp_path / "base")
    assert "CONFIG_NEW=y\n" in cfg.read_text()
    assert "NEW" in _index_kinds(cached_tree)   # the cache was written again


def test_a_type_changed_since_the_cache_was_written_gets_its_own_line(cached_tree: Path, tmp_path: Path) -> None:
    # NUM was an int when the cache was written (the request line CONFIG_NUM=7); now a string,
    # whose line is CONFIG_NUM="7": conf runs again with it, else it would ignore the value.
    (cached_tree / "Kconfig").write_text(TREE.replace('int "a number"\n\tdefault 5', 'string "a name"\n\tdefault "x"'))
    assert _index_kinds(cached_tree)["NUM"] == ["int"]
    cfg = tmp_path / "config"
    configure(cached_tree, cfg, [Request("NUM", "7")], base=tmp_path / "base")
    assert 'CONFIG_NUM="7"\n' in cfg.read_text()
    assert _index_kinds(cached_tree)["NUM"] == ["string"]


def test_an_unchanged_tree_is_read_from_the_index_with_its_check(cached_tree: Path, tmp_path: Path) -> None:
    held = scan_cache.cached(cached_tree.resolve(), "x86_64", trust=True)
    assert held.kinds["NUM"].type == "int"
    held.prefetch()
    assert held.fresh() and "A" in held.source().syms
    (cached_tree / "Kconfig").write_text(TREE + "\n")   # another size: the check sees it
    stale = scan_cache.cached(cached_tree.resolve(), "x86_64", trust=True)
    assert not stale.fresh()
    with pytest.raises(RuntimeError):
        stale.source()
