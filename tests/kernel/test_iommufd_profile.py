"""The iommufd/cdev Kconfig profile ([kernel] vfio_backend = "iommufd") on real trees: Debian's 6.12 has
IOMMUFD and VFIO_DEVICE_CDEV, 6.1 has neither (iommufd came in 6.2, the cdev in 6.6)."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TEST_CACHE
from kernel_trees import bookworm_tree

from lfspass.kernel.kconfig.configure import configure
from lfspass_plugins.core import core_requests, iommufd_requests


def _values(config: Path) -> dict[str, str]:
    return dict(l.split("=", 1) for l in config.read_text().splitlines() if l.startswith("CONFIG_"))


@pytest.mark.parametrize("vfio, want", [("module", "m"), ("builtin", "y")])
def test_6_12_gets_iommufd_and_the_cdev_and_keeps_the_group(tmp_path: Path, vfio: str, want: str) -> None:
    tree, _ = bookworm_tree(TEST_CACHE, "6.12")
    cfg = tmp_path / "config"
    res = configure(tree, cfg, core_requests("intel", vfio) + iommufd_requests(vfio), base="tinyconfig")
    values = _values(cfg)
    assert values["CONFIG_IOMMUFD"] == want and values["CONFIG_VFIO"] == want
    assert values["CONFIG_VFIO_DEVICE_CDEV"] == "y"
    assert values["CONFIG_VFIO_GROUP"] == values["CONFIG_VFIO_CONTAINER"] == "y"   # /dev/vfio/N still works
    assert res.skipped == []


def test_6_1_has_neither_symbol_and_says_so(linux_tree: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    res = configure(linux_tree, cfg, core_requests("intel", "module") + iommufd_requests("module"), base="tinyconfig")
    assert {s.symbol for s in res.skipped} == {"IOMMUFD", "VFIO_DEVICE_CDEV", "VFIO_GROUP", "VFIO_CONTAINER"}
    assert _values(cfg)["CONFIG_VFIO"] == "m" and "CONFIG_IOMMUFD" not in _values(cfg)


def test_the_recipe_key_turns_the_profile_on(tmp_path: Path) -> None:
    from lfspass.plugins import call_host, get_plugin_manager
    from lfspass.recipe import load_recipe

    symbols = {}
    for backend in ("group", "iommufd"):
        (tmp_path / "r.toml").write_text(f'[kernel]\nvfio_backend = "{backend}"\n')
        reqs = call_host(get_plugin_manager(), "lfspass_kconfig_requests", recipe=load_recipe(tmp_path / "r.toml"))
        symbols[backend] = {r.symbol: (r.value, r.source) for r in reqs}
    assert "IOMMUFD" not in symbols["group"]
    assert symbols["iommufd"]["IOMMUFD"] == ("m", "vfio_backend")
    assert symbols["iommufd"]["VFIO_DEVICE_CDEV"] == ("y", "vfio_backend")
