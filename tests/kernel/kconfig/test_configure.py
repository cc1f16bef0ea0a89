"""Kconfig engine: tiny purpose-built trees for the rules, Debian's 6.1 tree for the real thing."""
from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli
from kernel_trees import kernel_olddefconfig, named_base_config, parity_differences
from lfspass.errors import KconfigError
from lfspass.kernel.kconfig import conf_source
from lfspass.kernel.release import makefile_version
from lfspass.kernel.kconfig.configure import configure, kernel_symbols
from lfspass.kernel.kconfig.result import Change
from lfspass.model import Request
from lfspass_plugins.core import core_requests, kvm_requests

DEBIAN_CONFIG = Path("/usr/src/linux-config-6.1/config.amd64_none_amd64.xz")

# A tree in the syntax of kernels >= 5.13 (bare `modules`), so the host's linux-source-6.1 or
# 6.12 conf reads it (newer syntax is the sid cases' job, test_configure_parity.py).
TINY_KCONFIG = """\
mainmenu "Tiny $(ARCH) tree"

config MODULES
	bool "Enable loadable module support"
	modules

config A
	bool "A"

config B
	tristate "B"
	depends on A

config C
	bool "C"
	depends on B && !D

config D
	bool "D"

config S
	bool "S, which selects A"
	select A

config NUM
	int "a number"
	range 1 10
	default 5

config HIDDEN
	bool
	default y

choice
	prompt "Compression"
	default GZ
config GZ
	bool "gzip"
config XZ
	bool "xz"
endchoice
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Kconfig").write_text(TINY_KCONFIG)
    (tmp_path / "base.config").write_text("CONFIG_MODULES=y\n")
    return tree


def _cfg(path: Path) -> str:
    return path.read_text()


def test_tiny_tree_applies_requests_in_any_order(tiny: Path) -> None:
    cfg1, cfg2 = tiny.parent / "one.config", tiny.parent / "two.config"
    reqs = [Request("B", "m"), Request("A", "y"), Request("NUM", "7")]
    res = configure(tiny, cfg1, reqs, base=tiny.parent / "base.config")
    configure(tiny, cfg2, list(reversed(reqs)), base=tiny.parent / "base.config")
    assert res.changed and cfg1.read_bytes() == cfg2.read_bytes()
    text = _cfg(cfg1)
    assert "CONFIG_B=m\n" in text and "CONFIG_A=y\n" in text and "CONFIG_NUM=7\n" in text
    # The header is conf's, with $(ARCH) as the kernel's make exports it on an x86 host.
    assert text.startswith("#\n# Automatically generated file; DO NOT EDIT.\n# Tiny x86 tree\n#\n")
    assert Change("B", "", "m") in res.changes


def test_refusal_names_blocking_symbol_value_and_location(tiny: Path) -> None:
    cfg = tiny.parent / "out.config"
    with pytest.raises(KconfigError) as err:
        configure(tiny, cfg, [Request("B", "y", source="plugin:test")], base=tiny.parent / "base.config")
    msg = err.value.one_line()
    assert "B=y (from plugin:test) refused (got nothing)" in msg  # conf writes no line for B
    assert "depends on A [A=n]" in msg and "(Kconfig:10)" in msg and "--resolve" in msg
    assert not cfg.exists()  # nothing half-written


def test_several_refusals_are_one_line_each_joined(tiny: Path) -> None:
    with pytest.raises(KconfigError) as err:
        configure(tiny, tiny.parent / "o", [Request("B", "y"), Request("C", "y")],
                  base=tiny.parent / "base.config")
    msg = err.value.one_line()
    assert msg.count("refused") == 2 and "; C=y" in msg and "\n" not in str(err.value)


def test_resolve_enables_and_reports_dependencies(tiny: Path) -> None:
    cfg = tiny.parent / "out.config"
    res = configure(tiny, cfg, [Request("C", "y")], base=tiny.parent / "base.config", resolve=True)
    got = {r.symbol: r.value for r in res.resolved}
    # C is a bool: Kconfig lets it be y over a module B, so resolve asks B for m only.
    assert got == {"B": "m", "A": "y"}
    assert "CONFIG_C=y\n" in _cfg(cfg) and "# CONFIG_D is not set\n" in _cfg(cfg)
    assert all("needed by" in r.why for r in res.resolved)


def test_resolve_never_turns_a_symbol_off(tiny: Path) -> None:
    (tiny.parent / "base.config").write_text("CONFIG_MODULES=y\nCONFIG_D=y\n")
    with pytest.raises(KconfigError, match=r"C=y .*refused.*!D \[.*D=y"):
        configure(tiny, tiny.parent / "o", [Request("C", "y")], base=tiny.parent / "base.config", resolve=True)
    assert not (tiny.parent / "o").exists()


def test_selected_symbol_cannot_be_turned_off(tiny: Path) -> None:
    (tiny.parent / "base.config").write_text("CONFIG_S=y\n")
    with pytest.raises(KconfigError, match=r"A=n .*refused \(got y\): selected by S \[S=y\].*turn off S"):
        configure(tiny, tiny.parent / "o", [Request("A", "n")], base=tiny.parent / "base.config")


def test_m_without_modules_explains_modules(tiny: Path) -> None:
    (tiny.parent / "base.config").write_text("CONFIG_A=y\n")
    with pytest.raises(KconfigError, match=r"MODULES=n turns m into y.*set MODULES=y"):
        configure(tiny, tiny.parent / "o", [Request("B", "m")], base=tiny.parent / "base.config")


@pytest.mark.parametrize("req, needle", [
    (Request("NUMM", "3"), "did you mean NUM"),
    (Request("A", "m"), "bool symbol takes y, n"),
    (Request("NUM", "0x1z"), "the kernel's conf says \"symbol value '0x1z' invalid for NUM\"; an int symbol takes"),
    (Request("NUM", "05"), "invalid for NUM\"; an int symbol takes a decimal number without leading zeros; write 5"),
    (Request("NUM", "42"), "outside the allowed range 1..10"),
])
def test_bad_requests_are_explained(tiny: Path, req: Request, needle: str) -> None:
    with pytest.raises(KconfigError, match=needle):
        configure(tiny, tiny.parent / "o", [req], base=tiny.parent / "base.config")


def test_choice_members(tiny: Path) -> None:
    base = tiny.parent / "base.config"
    res = configure(tiny, tiny.parent / "o", [Request("XZ", "y")], base=base)
    assert Change("XZ", "", "y") in res.changes and "# CONFIG_GZ is not set\n" in _cfg(tiny.parent / "o")
    with pytest.raises(KconfigError, match=r"GZ=y .*shares a choice with XZ"):
        configure(tiny, tiny.parent / "o", [Request("GZ", "y"), Request("XZ", "y")], base=base)
    # Turning the default member off is the kernel's call, and kernels differ: 6.1's conf
    # keeps the default (GZ) and lfspass refuses; 6.12's conf chooses the other member.
    version = makefile_version(conf_source.conf_kernel(tiny)[0])
    if tuple(int(x) for x in version.split(".")[:2]) < (6, 12):
        with pytest.raises(KconfigError, match=r"GZ=n .*chosen member of its choice"):
            configure(tiny, tiny.parent / "o", [Request("GZ", "n")], base=base)
    else:
        configure(tiny, tiny.parent / "o", [Request("GZ", "n")], base=base)
        assert "# CONFIG_GZ is not set\nCONFIG_XZ=y\n" in _cfg(tiny.parent / "o"), version


def test_shell_probes_run_in_a_scratch_folder(tiny: Path) -> None:
    # The kernel's cc-option probes mkdir in the current folder; make runs them in the
    # build folder, so a read-only caller folder must not flip their results.
    with (tiny / "Kconfig").open("a") as fh:
        fh.write('config WHERE\n\tstring "where probes run"\n\tdefault "$(shell,pwd)"\n')
    configure(tiny, tiny.parent / "o", [], base=tiny.parent / "base.config")
    where = _cfg(tiny.parent / "o").split('CONFIG_WHERE="')[1].split('"')[0]
    assert "lfspass-conf-" in where and where != os.getcwd() and not Path(where).exists()


def test_conflicting_requests_name_both_sources(tiny: Path) -> None:
    reqs = [Request("A", "y", source="core"), Request("A", "n", source="plugin:x")]
    with pytest.raises(KconfigError, match="core asks y but plugin:x asks n"):
        configure(tiny, tiny.parent / "o", reqs, base=tiny.parent / "base.config")


def test_optional_missing_symbol_is_skipped_with_note(tiny: Path) -> None:
    res = configure(tiny, tiny.parent / "o", [Request("VFIO_GROUP", "y", optional=True)],
                    base=tiny.parent / "base.config")
    assert res.skipped and res.skipped[0].symbol == "VFIO_GROUP" and "not in this kernel" in res.skipped[0].why


def test_xz_base_and_environment_left_alone(tiny: Path) -> None:
    xz = tiny.parent / "base.config.xz"
    xz.write_bytes(lzma.compress(b"CONFIG_MODULES=y\nCONFIG_A=y\nCONFIG_B=m\n"))
    before = dict(os.environ)
    configure(tiny, tiny.parent / "o", [], base=xz)
    assert "CONFIG_B=m\n" in _cfg(tiny.parent / "o")
    assert dict(os.environ) == before


def test_second_run_keeps_file_and_mtime(tiny: Path) -> None:
    cfg = tiny.parent / "o"
    base = tiny.parent / "base.config"
    assert configure(tiny, cfg, [Request("A", "y")], base=base).changed
    os.utime(cfg, ns=(1_000_000_000, 1_000_000_000))
    res = configure(tiny, cfg, [Request("A", "y")], base=base)
    assert not res.changed and res.changes == [] and cfg.stat().st_mtime_ns == 1_000_000_000
    for stamp in tiny.parent.glob(".o.lfspass-kconfig"):
        stamp.unlink()  # the full path (no stamp) must not rewrite either
    assert not configure(tiny, cfg, [Request("A", "y")]).changed
    assert cfg.stat().st_mtime_ns == 1_000_000_000


def test_core_sets_are_data() -> None:
    intel = {r.symbol: r.value for r in core_requests("intel", "module")}
    assert intel["INTEL_IOMMU"] == "y" and intel["VFIO_PCI"] == "m" and intel["MODULES"] == "y"
    amd = {r.symbol: r.value for r in core_requests("amd", "builtin")}
    assert amd["AMD_IOMMU"] == "y" and amd["VFIO_PCI"] == "y" and "INTEL_IOMMU" not in amd
    assert {r.symbol for r in core_requests("intel", "module") if r.optional} == {"VFIO_GROUP", "VFIO_CONTAINER"}
    with pytest.raises(KconfigError, match="expected one of intel, amd"):
        core_requests("via", "module")


# ---- the real tree: Debian's linux-source-6.1 ----

@pytest.fixture(scope="module")
def kernel(linux_tree: Path) -> Path:
    """Parse the real tree once for this module (configure() keeps the parse in process)."""
    assert len(kernel_symbols(linux_tree)) > 15000
    return linux_tree


@pytest.fixture(scope="module")
def make_olddefconfig(kernel: Path, tmp_path_factory):
    """Run the kernel's own `make olddefconfig` on a copy; conf is built once in an O= dir."""
    out = tmp_path_factory.mktemp("kbuild")

    def run(config: Path) -> str:
        shutil.copyfile(config, out / ".config")
        subprocess.run(["make", "-s", f"O={out}", "olddefconfig"], cwd=kernel,  # no ARCH, as the build
                       check=True, capture_output=True)
        return (out / ".config").read_text()
    return run


def _assignments(text: str) -> list[str]:
    return [l for l in text.splitlines() if l.startswith("CONFIG_") or l.endswith(" is not set")]


@pytest.mark.parametrize("base, vfio", [(DEBIAN_CONFIG, "module"), ("tinyconfig", "builtin")])
def test_real_tree_core_requests_are_a_make_olddefconfig_fixed_point(
        kernel: Path, make_olddefconfig, tmp_path: Path, base, vfio: str) -> None:
    cfg = tmp_path / "config"
    reqs = core_requests("intel", vfio) + kvm_requests("intel", vfio)
    res = configure(kernel, cfg, reqs, base=base)
    values = dict(l.split("=", 1) for l in _cfg(cfg).splitlines() if l.startswith("CONFIG_"))
    for r in reqs:
        if r.symbol in {s.symbol for s in res.skipped}:
            continue
        assert values.get(f"CONFIG_{r.symbol}", "n") == r.value, r
    assert {s.symbol for s in res.skipped} == {"VFIO_GROUP", "VFIO_CONTAINER"}  # both newer than 6.1
    after = make_olddefconfig(cfg)
    assert _assignments(after) == _assignments(_cfg(cfg))
    assert after == _cfg(cfg)  # even the header and comments match, byte for byte
    # ... and it is what the kernel makes of the same input (a fixed point alone cannot see a lost start).
    start = lzma.decompress(DEBIAN_CONFIG.read_bytes()).decode() if base == DEBIAN_CONFIG else \
        named_base_config(kernel, base, tmp_path / "base")
    expected = kernel_olddefconfig(kernel, start, reqs, tmp_path / "obj")
    assert expected == _cfg(cfg), parity_differences(expected, _cfg(cfg))


def test_parity_check_fails_against_a_writer_that_drops_half_the_start(
        kernel: Path, make_olddefconfig, tmp_path: Path, monkeypatch) -> None:
    """The mutation check: lfspass made to lose every other line of Debian's config.  Its result is
    still a make olddefconfig fixed point (the old check passes), but not the kernel's result on
    the same input, and the parity check says which symbols differ."""
    from lfspass.kernel.kconfig import configure as configure_mod

    reqs = core_requests("intel", "module")
    start = lzma.decompress(DEBIAN_CONFIG.read_bytes()).decode()
    expected = kernel_olddefconfig(kernel, start, reqs, tmp_path / "obj")
    honest = tmp_path / "honest"
    configure(kernel, honest, reqs, base=DEBIAN_CONFIG)
    assert parity_differences(expected, _cfg(honest)) == []

    real_start = configure_mod._start

    def dropping_start(*args, **kwargs) -> str:
        lines = real_start(*args, **kwargs).splitlines()
        kept = [line for i, line in enumerate(lines) if not (line.startswith("CONFIG_") and i % 2)]
        return "\n".join(kept) + "\n"

    monkeypatch.setattr(configure_mod, "_start", dropping_start)
    broken = tmp_path / "broken"
    res = configure(kernel, broken, reqs, base=DEBIAN_CONFIG)
    assert all(_cfg(broken).count(f"CONFIG_{r.symbol}={r.value}\n") for r in reqs if r.symbol not in
               {s.symbol for s in res.skipped})                  # every request still holds
    assert make_olddefconfig(broken) == _cfg(broken)            # the fixed point cannot tell
    diffs = parity_differences(expected, _cfg(broken))
    assert diffs and diffs[-1].startswith("... ") and int(diffs[-1].split()[1]) > 100, diffs


def test_real_tree_unchanged_second_run_keeps_mtime(kernel: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    reqs = core_requests("amd", "module")
    assert configure(kernel, cfg, reqs, base=DEBIAN_CONFIG).changed
    mtime = cfg.stat().st_mtime_ns
    res = configure(kernel, cfg, reqs)  # from the file itself now, no stamp match
    assert not res.changed and res.changes == [] and cfg.stat().st_mtime_ns == mtime


def test_cli_refuses_vga_without_vga_arb_then_resolves(kernel: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    args = ["kconfig", "--tree", str(kernel), "--config", str(cfg), "--base", "tinyconfig",
            "--set", "VFIO_PCI_VGA=y"]
    err = assert_one_error_line(run_cli(*args), "VFIO_PCI_VGA=y", "got n", "VGA_ARB [VGA_ARB=n]",
                                "drivers/vfio/pci/Kconfig:", "--resolve")
    assert "VFIO_PCI" in err and not cfg.exists()
    ok = run_cli(*args, "--resolve", check=True)
    assert "resolved VGA_ARB=y (needed by VFIO_PCI_VGA=y)" in ok.stdout
    text = _cfg(cfg)
    assert "CONFIG_VGA_ARB=y\n" in text and "CONFIG_VFIO_PCI_VGA=y\n" in text
    mtime = cfg.stat().st_mtime_ns
    again = run_cli(*args, "--resolve", "--json", check=True)
    data = json.loads(again.stdout)
    assert data["changed"] is False and data["changes"] == [] and cfg.stat().st_mtime_ns == mtime
    assert {"symbol": "VGA_ARB", "value": "y", "why": "needed by VFIO_PCI_VGA=y"} in data["resolved"]


def test_cli_unknown_symbol_and_bad_syntax(kernel: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    shutil.copyfile(kernel / "arch/x86/configs/x86_64_defconfig", cfg)
    before = cfg.read_bytes()
    assert_one_error_line(run_cli("kconfig", "--tree", str(kernel), "--config", str(cfg),
                                  "--set", "VFIO_PCII=m"), "VFIO_PCII", "did you mean VFIO_PCI")
    assert_one_error_line(run_cli("kconfig", "--tree", str(kernel), "--config", str(cfg),
                                  "--set", "VFIO_PCI"), "--set 'VFIO_PCI'", "SYMBOL=VALUE")
    assert cfg.read_bytes() == before


def test_resolve_keeps_vfio_a_module(kernel: Path, tmp_path: Path) -> None:
    """VFIO_PCI_VGA (bool) over VFIO_PCI=m needs only VGA_ARB: resolve must not build VFIO in."""
    cfg = tmp_path / "config"
    configure(kernel, cfg, core_requests("intel", "module") + [Request("VGA_ARB", "n")], base="tinyconfig")
    err = assert_one_error_line(run_cli("kconfig", "--tree", str(kernel), "--config", str(cfg),
                                        "--set", "VFIO_PCI_VGA=y"), "VGA_ARB [VGA_ARB=n]")
    assert "VFIO_PCI [" not in err  # a module dependency does not block a bool
    ok = run_cli("kconfig", "--tree", str(kernel), "--config", str(cfg), "--set", "VFIO_PCI_VGA=y",
                 "--resolve", "--json", check=True)
    assert [r["symbol"] for r in json.loads(ok.stdout)["resolved"]] == ["VGA_ARB"]
    text = _cfg(cfg)
    assert "CONFIG_VFIO_PCI=m\n" in text and "CONFIG_VFIO_PCI_VGA=y\n" in text


def test_conflicting_requests_on_a_real_tree_are_one_error_line(linux_tree: Path, tmp_path: Path) -> None:
    """The conf path (no kconfiglib) refuses two requests that disagree, before touching the config."""
    config = tmp_path / ".config"
    config.write_text((linux_tree / "arch/x86/configs/x86_64_defconfig").read_text())
    before = config.read_bytes()
    proc = run_cli("kconfig", "--tree", str(linux_tree), "--config", str(config), "--set", "VFIO=m", "--set", "VFIO=y")
    assert_one_error_line(proc, "VFIO", "asks m", "asks y", "make them agree")
    assert config.read_bytes() == before
