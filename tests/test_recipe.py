"""Recipe loading, PCI id parsing, and the recipe reference (docs/reference/recipe.md) staying true."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

from lfspass.errors import PciIdError, RecipeError
from lfspass.pci import parse_pci_address, parse_pci_id
from lfspass.recipe import Recipe, load_recipe
from lfspass.schema import markdown_reference, reference_main, write_reference

REFERENCE = REPO / "docs" / "reference" / "recipe.md"


@pytest.mark.parametrize("text,expected", [("10de:1e37", "10de:1e37"), ("10DE:1E37", "10de:1e37"), (" 1234:11e8 ", "1234:11e8")])
def test_pci_id_normalised(text: str, expected: str) -> None:
    assert parse_pci_id(text) == expected


@pytest.mark.parametrize("text,hint", [("10de:11b39", "'11b39' has 5 hex digits"), ("10DE-1e37", "use ':'"),
                                       ("", "empty"), ("nvidia", "malformed"), ("10de:1e3g", "malformed")])
def test_pci_id_errors_say_what_is_wrong(text: str, hint: str) -> None:
    with pytest.raises(PciIdError, match=re.escape(hint)):
        parse_pci_id(text, "x.toml devices[0].id")


@pytest.mark.parametrize("text,expected", [("82:00.0", "0000:82:00.0"), ("0000:05:00.1", "0000:05:00.1"), ("0B:00.0", "0000:0b:00.0")])
def test_pci_address_forms(text: str, expected: str) -> None:
    assert parse_pci_address(text) == expected


@pytest.mark.parametrize("text", ["82:00", "82:00.8", "host=82:00.0", "0000:82:20.0"])
def test_pci_address_errors(text: str) -> None:
    with pytest.raises(PciIdError, match="lspci -D"):
        parse_pci_address(text)


def test_shipped_recipes_load() -> None:
    for path in sorted((REPO / "recipes").glob("*.toml")):
        recipe = load_recipe(path)
        assert recipe.path == path
        assert Path(recipe.host.root).is_absolute()


def test_relative_paths_follow_the_recipe_folder(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "r.toml").write_text('[host]\nroot = "../out"\n[kernel]\nversion = "6.1.1"\nbuild_dir = "kb"\n')
    recipe = load_recipe(sub / "r.toml")
    assert recipe.host.root == str(tmp_path / "out")
    assert recipe.kernel.build_dir == str(sub / "kb")


def test_env_var_selects_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "r.toml").write_text('[host]\nname = "from-env"\n')
    monkeypatch.setenv("LFSPASS_RECIPE", str(tmp_path / "r.toml"))
    assert load_recipe().host.name == "from-env"


@pytest.mark.parametrize("body,needle", [
    ('[[vms]]\nname = "d2l; rm -rf /"\n', "letters, digits"),
    ('[[vms]]\nname = "a"\n[[vms]]\nname = "a"\n', "unique"),
    ('[kernel.config]\nCONFIG_VFIO = "y"\n', "without CONFIG_"),
    ('[kernel.config]\nVFIO = true\n', "expected a string"),
    ('[[devices]]\nname = "x"\n', "needs 'address'"),
    ('hostname = "x"\n', "unknown key 'hostname'"),
])
def test_recipe_errors(tmp_path: Path, body: str, needle: str) -> None:
    (tmp_path / "r.toml").write_text(body)
    with pytest.raises(RecipeError, match=re.escape(needle)):
        load_recipe(tmp_path / "r.toml")


def test_recipe_reference_is_current() -> None:
    page = REFERENCE.read_text()
    begin = page.index("<!-- BEGIN recipe-reference")
    begin = page.index("\n", begin) + 1
    end = page.index("<!-- END recipe-reference -->")
    assert page[begin:end] == markdown_reference(Recipe), \
        f"{REFERENCE.relative_to(REPO)} is stale: regenerate it with `python -m lfspass.recipe`"


def test_reference_writer_replaces_only_the_table(tmp_path: Path) -> None:
    """`python -m lfspass.recipe` rewrites a stale table between the markers; the prose around it stays byte for byte."""
    page = tmp_path / "recipe.md"
    before, after = "# Recipe reference\n\nprose\n", "<!-- END recipe-reference -->\n\nmore prose\n"
    page.write_text(before + "<!-- BEGIN recipe-reference (generated) -->\n| stale | table |\n" + after)
    assert write_reference(page, Recipe)
    assert page.read_text() == before + "<!-- BEGIN recipe-reference (generated) -->\n" + markdown_reference(Recipe) + after
    assert not write_reference(page, Recipe)  # current: left alone


def test_reference_writer_without_markers_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    page = tmp_path / "recipe.md"
    page.write_text("# no markers here\n")
    assert reference_main(page, Recipe) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "END recipe-reference" in err
    assert page.read_text() == "# no markers here\n"
    assert reference_main(tmp_path / "missing.md", Recipe) == 2
    assert "missing.md: cannot read" in capsys.readouterr().err


def test_recipe_without_kernel_source_or_version_is_one_error_line(tmp_path: Path) -> None:
    """doit cannot know which kernel the host runs: it says which key to add, no traceback."""
    from conftest import assert_one_error_line, run_doit

    recipe = tmp_path / "nokernel.toml"
    recipe.write_text('[host]\nroot = "root"\n[boot]\nroot_device = "/dev/vda"\n')
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert_one_error_line(proc, "nokernel.toml", "'source'", "'version'")
    assert not (tmp_path / "root").exists()
