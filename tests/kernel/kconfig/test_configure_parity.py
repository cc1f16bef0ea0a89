"""Parity with the kernel's own Kconfig on Debian's 6.1, 6.12 and sid's newest tree.

Every result must equal, byte for byte, what the kernel makes of the same input: the starting
config (Debian's, or `make <base>`'s) with the requests appended as .config lines written here,
through `make olddefconfig` as the build runs it (without ARCH); and it must hold every request.
(A fixed-point check, make olddefconfig of lfspass's own output, cannot see a starting config
that lfspass lost: tests/kernel/kconfig/test_configure.py shows it with a broken writer.)  sid moves: a failure names the version it broke on;
with the archive unreachable and no sid tree cached those tests skip with the reason (marker `network`).
"""
from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import TEST_CACHE, run_cli
from kernel_trees import NEEDS_SID, bookworm_tree, kernel_olddefconfig, named_base_config, parity_differences
from lfspass.kernel.kconfig.configure import configure, kernel_symbols
from lfspass.model import Request
from lfspass_plugins.core import core_requests, kvm_requests

DEBIAN_61 = Path("/usr/src/linux-config-6.1/config.amd64_none_amd64.xz")


@pytest.fixture(scope="session")
def trees(linux_tree: Path, sid) -> dict[str, tuple[Path, Path, str]]:
    out = {"6.1": (linux_tree, DEBIAN_61, "6.1")}
    try:
        tree, config = bookworm_tree(TEST_CACHE, "6.12")
        out["6.12"] = (tree, config, "6.12")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    out["sid"] = sid
    return out


def _plain(config: Path, dest: Path) -> Path:
    dest.write_bytes(lzma.decompress(config.read_bytes()) if config.suffix == ".xz" else config.read_bytes())
    return dest


def _make_olddefconfig(tree: Path, cfg: Path, obj: Path) -> str:
    """The kernel's own verdict on ``cfg``: make olddefconfig over a copy, as the build runs it."""
    copy = obj.parent / f"{cfg.name}.make"
    shutil.copyfile(cfg, copy)
    subprocess.run(["make", "-s", "-C", str(tree), f"O={obj}", f"KCONFIG_CONFIG={copy}", "olddefconfig"],
                   check=True, capture_output=True)
    return copy.read_text()


_SETS = {
    "intel-vfio-module": lambda: core_requests("intel", "module"),
    "vfio-builtin": lambda: core_requests("intel", "builtin"),
    "amd-iommu": lambda: core_requests("amd", "module"),
    "iommufd-cdev": lambda: core_requests("intel", "module") + [
        Request("IOMMUFD", "m", "test", optional=True), Request("VFIO_DEVICE_CDEV", "y", "test", optional=True)],
    "kvm-intel": lambda: core_requests("intel", "module") + kvm_requests("intel", "module"),
}
# A representative subset, to stay within a few minutes on 2 cores: every base with the
# Intel set, every request set on Debian's config (3 trees x 8 = 24 configure runs).
_CASES = [(b, "intel-vfio-module") for b in ("debian", "defconfig", "tinyconfig", "allnoconfig")] + \
         [("debian", s) for s in _SETS if s != "intel-vfio-module"]


@NEEDS_SID
@pytest.mark.slow
@pytest.mark.parametrize("name", ["6.1", "6.12", "sid"])
def test_parity_matrix(trees, name: str, tmp_path: Path) -> None:
    tree, debian, version = trees[name]
    obj = tmp_path / "obj"
    names = kernel_symbols(tree)
    for base, set_name in _CASES:
        cfg = tmp_path / f"{base}-{set_name}.config"
        reqs = _SETS[set_name]()
        start = _plain(debian, tmp_path / "debian.config") if base == "debian" else base
        where = f"linux {version}, base {base}, requests {set_name}"
        res = configure(tree, cfg, reqs, base=start)
        text = cfg.read_text()
        start_text = start.read_text() if isinstance(start, Path) else named_base_config(tree, base, tmp_path / "base")
        expected = kernel_olddefconfig(tree, start_text, reqs, obj)
        values = dict(l.split("=", 1) for l in text.splitlines() if l.startswith("CONFIG_"))
        for r in reqs:
            if r.optional and r.symbol not in names:
                assert r.symbol in {s.symbol for s in res.skipped}, where
                continue
            got = values.get(f"CONFIG_{r.symbol}", "n")
            assert got == r.value, f"{where}: {r.symbol}={r.value} got {got}"
        assert expected == text, f"{where}: {parity_differences(expected, text)}"


@NEEDS_SID
def test_sid_acceptance_request_set(sid, tmp_path: Path) -> None:
    tree, debian, version = sid
    cfg = _plain(debian, tmp_path / "config")
    sets = ["INTEL_IOMMU=y", "VFIO=m", "VFIO_PCI=m", "IOMMUFD=m", "VFIO_DEVICE_CDEV=y"]
    expected = kernel_olddefconfig(tree, cfg.read_text(), [Request(*s.split("="), "test") for s in sets], tmp_path / "obj")
    proc = run_cli("kconfig", "--tree", str(tree), "--config", str(cfg), *[a for s in sets for a in ("--set", s)])
    assert proc.returncode == 0, f"sid linux-source {version}: {proc.stderr}"
    text = cfg.read_text()
    for s in sets:
        assert f"CONFIG_{s}\n" in text, f"sid linux-source {version}: {s} does not hold"
    assert expected == text, f"sid linux-source {version}: {parity_differences(expected, text)}"


@NEEDS_SID
def test_debian_61_config_carried_into_sid_equals_make_olddefconfig(sid, tmp_path: Path) -> None:
    tree, _debian, version = sid
    cfg = _plain(DEBIAN_61, tmp_path / "config")
    expected = _make_olddefconfig(tree, cfg, tmp_path / "obj")
    proc = run_cli("kconfig", "--tree", str(tree), "--config", str(cfg))
    assert proc.returncode == 0, f"sid linux-source {version}: {proc.stderr}"
    assert cfg.read_text() == expected, f"sid linux-source {version}: not make olddefconfig's result"
    assert "upgrade: " in proc.stdout and "not in this tree" in proc.stdout  # the summary


@NEEDS_SID
def test_alldefconfig_from_empty_matches_the_kernel(sid, tmp_path: Path) -> None:
    """alldefconfig from an empty config: --base alldefconfig equals conf --alldefconfig."""
    tree, _debian, version = sid
    folder = tree / "scripts" / "kconfig" / "tests" / "transitional"
    (tmp_path / "empty").write_text("")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    shutil.copyfile(tmp_path / "empty", ours)
    assert run_cli("kconfig", "--tree", str(folder), "--config", str(ours)).returncode == 0
    proc = run_cli("kconfig", "--tree", str(folder), "--config", str(theirs), "--base", "alldefconfig")
    assert proc.returncode == 0, proc.stderr
    assert ours.read_text() == theirs.read_text(), f"sid linux-source {version}"
    assert "CONFIG_NEW_BOOL" in ours.read_text() and "OLD_BOOL" not in ours.read_text()


def test_kconfiglib_reads_conditional_deps_and_transitional(sid, tmp_path: Path) -> None:
    """The explanation engine on 7.x syntax (sid's conf writes): `depends on A if B` means A || B=n."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Kconfig").write_text(
        'config FOO\n\tbool "foo"\nconfig BAR\n\tbool "bar"\n'
        'config TEST\n\tbool "conditional"\n\tdepends on FOO if BAR\n'
        'config OLD\n\tbool\n\ttransitional\nconfig NEW\n\tbool "new"\n\tdefault OLD\n')
    (tmp_path / "bar").write_text("CONFIG_BAR=y\n")
    from lfspass.errors import KconfigError
    with pytest.raises(KconfigError, match=r"TEST=y .*refused.*FOO.*add FOO=y"):
        configure(tree, tmp_path / "o", [Request("TEST", "y")], base=tmp_path / "bar", conf_source=sid[0])
    (tmp_path / "old").write_text("CONFIG_OLD=y\n")
    res = configure(tree, tmp_path / "o", [Request("TEST", "y")], base=tmp_path / "old", conf_source=sid[0])
    text = (tmp_path / "o").read_text()
    assert "CONFIG_TEST=y" in text and "CONFIG_NEW=y" in text and "OLD" not in text, res


def test_refusal_explained_from_kconfig_sources_when_kconfiglib_cannot_parse(linux_tree: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    """A tree whose syntax kconfiglib does not know: the symbol's own Kconfig lines explain."""
    from lfspass.errors import KconfigError
    import lfspass.kernel.kconfig.kconfiglib_adapter as adapter

    def cannot(*_a, **_k):
        raise KconfigError("this tree uses Kconfig syntax kconfiglib does not know")
    monkeypatch.setattr(adapter, "explain_all", cannot)
    cfg = tmp_path / "config"
    reqs = core_requests("intel", "module") + [Request("NR_CPUS", "5000"), Request("KVM_INTEL", "m")]
    with pytest.raises(KconfigError) as err:
        configure(linux_tree, cfg, reqs, base="tinyconfig")
    msg = err.value.one_line()
    assert "NR_CPUS=5000 (from recipe) refused (got 1): outside the allowed range" in msg
    assert "(arch/x86/Kconfig:" in msg
    assert "KVM_INTEL=m (from recipe) refused" in msg and "arch/x86/kvm/Kconfig:" in msg
    assert "add KVM=m" in msg and not cfg.exists()
