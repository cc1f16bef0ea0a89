"""The upgrade report: Debian's 6.12 config carried into sid's newest tree (base = "current")."""
from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_doit
from kernel_trees import NEEDS_SID
from lfspass.errors import CheckFailed
from lfspass.kernel.config_guard import check_upgrade
from lfspass.kernel.kconfig.symbols import Source, Sym
from lfspass.kernel.kconfig.upgrade_report import Move, UpgradeReport, classify, loaded_modules

DEBIAN_612 = Path("/usr/src/linux-config-6.12/config.amd64_none_amd64.xz")
LAB = REPO / "recipes" / "lab.toml"


def _recipe(tmp: Path, tree: Path, accept: str = "") -> Path:
    text = LAB.read_text()
    text = text.replace('root = "../build/lab/root"', f'root = "{tmp}/root"\nsysfs_root = "{tmp}/host"')
    text = text.replace('source = "/usr/src/linux-source-6.1.tar.xz"', f'source = "{tree}"')
    text = text.replace('base = "tinyconfig"', 'base = "current"' + (f'\naccept_report = "{accept}"' if accept else ""))
    text = text.replace('build_dir = "../build/lab/kernel"', f'build_dir = "{tmp}/b"')
    path = tmp / "r.toml"
    path.write_text(text)
    return path


@NEEDS_SID
def test_612_to_newest_lists_what_breaks_the_host_and_stops_until_accepted(sid, tmp_path: Path) -> None:
    tree, _config, version = sid
    (tmp_path / "host").mkdir()                       # a host whose loaded modules are unknown
    boot = tmp_path / "root" / "boot"
    boot.mkdir(parents=True)
    (boot / "config-6.12.57+deb12-amd64").write_bytes(lzma.decompress(DEBIAN_612.read_bytes()))
    recipe = _recipe(tmp_path, tree)
    proc = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    err = assert_one_error_line(proc, "turns off", "accept_report", str(recipe))
    assert "the hand edit" not in proc.stdout, proc.stdout        # the seed is not a hand edit
    assert "kernel config: upgrade: " in proc.stdout and "likely to break the host" in proc.stdout
    report = json.loads((tmp_path / "b" / "upgrade-report.json").read_text())
    breaks = {m["symbol"]: m for m in report["likely_to_break_the_host"]}
    assert {"IP_NF_IPTABLES_LEGACY", "IP_NF_FILTER", "IP6_NF_IPTABLES_LEGACY", "HYPERV"} <= breaks.keys(), breaks
    assert "NETFILTER_XTABLES_LEGACY" in breaks["IP_NF_IPTABLES_LEGACY"]["reason"]
    assert breaks["IP_NF_FILTER"]["category"] == "network filtering" and breaks["HYPERV"]["old"] == "m"
    cats = [m["category"] for m in report["likely_to_break_the_host"]]
    assert cats == sorted(cats, key=["storage", "filesystems", "network drivers", "network filtering",
                                     "hypervisor support", "passthrough"].index)       # worst first
    assert any("invalid for HYPERV" in w for w in report["kernel_warnings"]), report["kernel_warnings"][:5]
    assert report["on_to_off"] and report["off_to_on"] and report["version"].startswith(version.split()[0])
    text = (tmp_path / "b" / "upgrade-report.txt").read_text()
    assert f"digest {report['digest']}" in text and "## on -> off" in text
    assert re.search(rf'accept_report = "{report["digest"]}"', err)
    # Nothing was compiled, a second run stops again (its rerun of conf on the config the upgrade
    # made changes nothing, so the upgrade's report stands), and so would kernel:build's own check.
    again = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert_one_error_line(again, "turns off", report["digest"])
    assert not (tmp_path / "b" / "build.log").exists()
    with pytest.raises(CheckFailed, match=report["digest"]):
        check_upgrade(tmp_path / "b", tmp_path / "b" / "obj" / ".config", False, "", recipe)
    check_upgrade(tmp_path / "b", tmp_path / "b" / "obj" / ".config", False, report["digest"], recipe)
    # Accepted by its digest: kernel:config passes (the build would follow).
    _recipe(tmp_path, tree, accept=report["digest"])
    ok = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def _source(entries: dict[str, str]) -> Source:
    return Source({n: Sym(n, "tristate", [f"{d}:1"], prompt=True) for n, d in entries.items()}, [])


def test_loaded_modules_decide_what_breaks(tmp_path: Path) -> None:
    """A storage or NIC driver breaks the host only when it is loaded (or was built in); network
    filtering always (rules load it on use); an unknown host counts everything."""
    tree = tmp_path / "tree"
    for folder, line in (("drivers/net/ethernet/intel", "obj-$(CONFIG_E1000E) += e1000e/\nobj-$(CONFIG_IGB) += igb.o\n"),
                         ("net/ipv4/netfilter", "obj-$(CONFIG_IP_NF_FILTER) += iptable_filter.o\n")):
        (tree / folder).mkdir(parents=True)
        (tree / folder / "Makefile").write_text(line)
    src = _source({"IGB": "drivers/net/ethernet/intel/Kconfig", "IXGB": "drivers/net/ethernet/intel/Kconfig",
                   "IP_NF_FILTER": "net/ipv4/netfilter/Kconfig"})

    def report() -> UpgradeReport:
        rep = UpgradeReport("t", "7.2")
        rep.off = [Move(n, "m", "", where=src.syms[n].defs[0], category=c) for n, c in
                   (("IGB", "network drivers"), ("IXGB", "network drivers"), ("IP_NF_FILTER", "network filtering"))]
        return rep

    (tmp_path / "host/proc").mkdir(parents=True)
    (tmp_path / "host/proc/modules").write_text("igb 294912 0 - Live 0x0000000000000000\n")
    loaded = loaded_modules(tmp_path / "host")
    assert loaded == {"igb"} and loaded_modules(tmp_path / "nowhere") is None
    known, unknown = report(), report()
    classify(known, tree, src, loaded, "host/proc/modules")
    classify(unknown, tree, src, None, "")
    assert [m.symbol for m in known.breaks] == ["IGB", "IP_NF_FILTER"] and known.breaks[0].modules == ["igb"]
    assert [m.symbol for m in unknown.breaks] == ["IGB", "IXGB", "IP_NF_FILTER"]
    assert known.digest != unknown.digest and known.host and not unknown.host


def test_each_move_gets_the_reason_its_kconfig_lines_give() -> None:
    """The reasons come from the new tree's lines (upgrade_reason.py), one per kind of move."""
    from lfspass.kernel.kconfig.upgrade_report import build

    def sym(name: str, kind: str = "tristate", **kw) -> Sym:
        return Sym(name, kind, [f"net/netfilter/Kconfig:{len(name)}"], prompt=kw.pop("prompt", True), **kw)
    syms = [sym("XT_LEGACY", "bool"),
            sym("IPT_LEGACY", depends=[("XT_LEGACY", "net/ipv4/netfilter/Kconfig:16")]),
            sym("HV", "bool"),                                   # was tristate: m is gone
            sym("VIRQFD", prompt=False, selected_by=[("VFIO", "", "drivers/vfio/Kconfig:3 (select)")]),
            sym("VFIO"), sym("FRESH"), sym("PANIC_T", "int")]
    src = Source({s.name: s for s in syms}, [])
    start = {"IPT_LEGACY": "m", "HV": "m", "VIRQFD": "m", "VFIO": "y", "PANIC_T": "n", "GONE": "y"}
    got = {"XT_LEGACY": "n", "HV": "n", "VIRQFD": "y", "VFIO": "y", "FRESH": "m", "PANIC_T": "0"}
    rep = build(Path("t"), "7.2", src, start, got, {}, "")
    why = {m.symbol: m.reason for m in rep.off + rep.on + rep.changed}
    assert why["IPT_LEGACY"] == ("depends on XT_LEGACY (net/ipv4/netfilter/Kconfig:16) [XT_LEGACY=n]; "
                                 "new in this tree: XT_LEGACY")
    assert why["HV"] == "a bool in this tree: m is not a value it takes"
    assert why["VIRQFD"] == "selected by VFIO" and why["FRESH"] == "new in this tree, default m"
    assert why["GONE"] == "not in this tree (removed or renamed)"
    assert why["PANIC_T"] == "an int in this tree (it was a switch): its default 0"
    assert [m.symbol for m in rep.changed] == ["PANIC_T", "VIRQFD"]
