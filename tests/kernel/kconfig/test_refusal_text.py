"""One sentence per refusal reason: kconfiglib's analysis and the Kconfig-lines one word it the same."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import lfspass.kernel.kconfig.kconfiglib_adapter as adapter
from lfspass.errors import KconfigError
from lfspass.kernel.kconfig.configure import configure
from lfspass.model import Request
from test_configure import TINY_KCONFIG

# Where each explainer points differs (the symbol's definition, or the select/range/depends line).
_PLACE = re.compile(r" \(Kconfig:\d+(?: \(\w+\))?(?:, Kconfig:\d+(?: \(\w+\))?)*\)")


def _refusal(tree: Path, base: str, req: Request) -> str:
    (tree.parent / "base.config").write_text(base)
    with pytest.raises(KconfigError) as err:
        configure(tree, tree.parent / "o", [req], base=tree.parent / "base.config")
    return err.value.one_line()


@pytest.mark.parametrize("base, req, words", [
    ("CONFIG_A=y\n", Request("B", "m"), "MODULES=n turns m into y; set MODULES=y or use --resolve"),
    ("CONFIG_S=y\n", Request("A", "n"), "selected by S [S=y]; turn off S first"),
    ("CONFIG_MODULES=y\n", Request("NUM", "42"), "outside the allowed range 1..10"),
    ("CONFIG_MODULES=y\n", Request("B", "y"), "depends on A [A=n]; add A=y or use --resolve"),
    ("CONFIG_MODULES=y\n", Request("HIDDEN", "n"), "its default or an implying symbol wins"),
])
def test_both_explainers_say_the_same(tmp_path: Path, monkeypatch, base: str, req: Request, words: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Kconfig").write_text(TINY_KCONFIG)
    by_kconfiglib = _refusal(tree, base, req)

    def cannot(*_a, **_k):
        raise KconfigError("this tree uses Kconfig syntax kconfiglib does not know")
    monkeypatch.setattr(adapter, "explain_all", cannot)
    by_lines = _refusal(tree, base, req)
    assert _PLACE.sub("", by_kconfiglib) == _PLACE.sub("", by_lines), (by_kconfiglib, by_lines)
    assert words in _PLACE.sub("", by_lines) and "(Kconfig:" in by_lines
