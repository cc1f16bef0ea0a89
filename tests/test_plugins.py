"""Plugins: built-ins, blocking, third-party entry points, and what each hook contributes."""
from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, hooks_called, run_cli, run_doit, whole_run
from hostcases import write_case

from lfspass import hookspecs


def _third_party(tmp_path: Path) -> dict[str, str]:
    """An installed-looking distribution whose entry point registers a GPU plugin."""
    site = tmp_path / "site"
    (site / "acme_gpu.py").parent.mkdir(parents=True)
    (site / "acme_gpu.py").write_text(textwrap.dedent('''
        """ACME Fire 9000 (1d17:9000): needs its audio driver held back and a quirky kernel."""
        from lfspass.api import hookimpl

        @hookimpl
        def lfspass_pci_ids():
            return ["1d17:9000"]

        @hookimpl
        def lfspass_cmdline(recipe, device):
            return ["acme.nohang=1"] if device is not None else None

        @hookimpl
        def lfspass_modprobe(recipe, device):
            return ["softdep acmefb pre: vfio-pci"] if device is not None else None

        @hookimpl
        def lfspass_autoload(recipe, device):
            return ["acme_mdev"] if device is not None else None

        @hookimpl
        def lfspass_kconfig_requests(recipe, device):
            from lfspass.api import Request
            if device is None:
                return None
            return [Request(sym, val, source="plugin:acme_gpu") for sym, val in
                    (line.split("=") for line in __import__("os").environ.get("ACME_KCONFIG", "").split())]
    '''))
    dist = site / "acme_gpu-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-gpu\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[lfspass]\nacme_gpu = acme_gpu\n")
    return {"PYTHONPATH": str(site)}


def test_third_party_plugin_through_entry_point(tmp_path: Path) -> None:
    env = _third_party(tmp_path)
    listed = json.loads(run_cli("plugins", "--json", env=env, check=True).stdout)
    acme = [p for p in listed["plugins"] if p["name"] == "acme_gpu"]
    assert acme and acme[0]["ids"] == ["1d17:9000"] and acme[0]["source"] == "acme-gpu 1.2"
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    recipe.write_text(recipe.read_text() + '[[devices]]\nid = "1d17:9000"\n')
    assert run_doit(f"recipe={recipe}", "grub", "vfio", cwd=tmp_path, env=env).returncode == 0
    grub = (tmp_path / "root/boot/grub/grub.cfg").read_text()
    conf = (tmp_path / "root/etc/modprobe.d/vfio.conf").read_text()
    assert "acme.nohang=1" in grub
    assert "softdep acmefb pre: vfio-pci" in conf
    modules = (tmp_path / "root/etc/sysconfig/modules").read_text().splitlines()
    assert modules.index("acme_mdev") > modules.index("vfio-pci")  # lfspass_autoload, after vfio-pci
    # Device hooks go to the owner only: the T10 plugin's softdeps appear once, not for ACME.
    assert conf.count("softdep nouveau pre: vfio-pci") == 1


def test_blocking_a_plugin_by_name(tmp_path: Path) -> None:
    env = {"LFSPASS_DISABLE_PLUGINS": "tesla_t10"}
    names = [p["name"] for p in json.loads(run_cli("plugins", "--json", env=env, check=True).stdout)["plugins"]]
    assert "tesla_t10" not in names and "generic" in names
    # With the T10 plugin blocked, the generic fallback handles its id by vendor.
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    assert run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path, env=env).returncode == 0
    assert "softdep nouveau pre: vfio-pci" in (tmp_path / "root/etc/modprobe.d/vfio.conf").read_text()


def test_broken_third_party_plugin_is_one_error_line(tmp_path: Path) -> None:
    env = _third_party(tmp_path)
    (Path(env["PYTHONPATH"]) / "acme_gpu.py").write_text("raise ImportError('libacme.so missing')\n")
    proc = run_cli("plugins", env=env)
    assert_one_error_line(proc, "libacme.so missing", "LFSPASS_DISABLE_PLUGINS")


def hook_specs() -> list[str]:
    """The hook specs lfspass declares, as pluggy sees them (the marker's ``lfspass_spec`` attribute)."""
    return sorted(name for name, obj in vars(hookspecs).items() if getattr(obj, "lfspass_spec", None) is not None)


def test_every_hook_is_called_by_some_test(pytestconfig) -> None:
    """Each hook spec was called by lfspass during this run, in some test's process (datasette's rule).

    conftest.py orders this test last and records, through tests/hooktrace, every hook any
    lfspass process of the run called; a narrowed run (a path, -k, -m slow) cannot tell, so it skips.
    """
    why = whole_run(pytestconfig)
    if why:
        pytest.skip(f"hook coverage needs the whole suite; this run is narrowed ({why})")
    specs = hook_specs()
    assert len(specs) >= 9, specs
    uncalled = [name for name in specs if name not in hooks_called(pytestconfig)]
    assert not uncalled, f"hooks no test made lfspass call: {uncalled}"


def test_hookspecs_document_their_contract() -> None:
    tree = ast.parse((REPO / "lfspass/hookspecs.py").read_text())
    for fn in [n for n in tree.body if isinstance(n, ast.FunctionDef)]:
        doc = ast.get_docstring(fn) or ""
        assert ":return:" in doc, f"{fn.name} docstring lacks :return:"
        for arg in fn.args.args:
            assert f":param {arg.arg}:" in doc, f"{fn.name} does not document {arg.arg}"


def test_plugin_kconfig_requests_reach_the_kernel_config(tmp_path: Path, linux_tree: Path) -> None:
    """lfspass_kconfig_requests: granted requests land in .config, refused ones are explained."""
    env = _third_party(tmp_path)
    recipe = tmp_path / "k.toml"
    recipe.write_text(f'[host]\nroot = "root"\n[kernel]\nsource = "{linux_tree}"\nbase = "tinyconfig"\n'
                      '[boot]\nroot_device = "/dev/vda"\n[[devices]]\nid = "1d17:9000"\n')
    env["ACME_KCONFIG"] = "IKCONFIG=y"
    proc = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = (tmp_path / "build/kernel/obj/.config").read_text()
    assert "CONFIG_IKCONFIG=y\n" in config and "CONFIG_VFIO_PCI=m\n" in config
    # A request the kernel's dependencies refuse stops the build and names the blocker.
    env["ACME_KCONFIG"] = "KVM_INTEL=m"
    proc = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path, env=env)
    assert_one_error_line(proc, "KVM_INTEL", "plugin:acme_gpu", "VIRTUALIZATION")
    # The fix it offers is the recipe's switch, not the standalone command's flag.
    assert f"resolve = true under [kernel] in {recipe}" in proc.stderr
    assert "--resolve" not in proc.stderr


def test_third_party_claim_beats_a_builtin_whatever_the_install_order(tmp_path: Path) -> None:
    """A plugin claiming the T10's id owns it; `lfspass plugins` names the overridden built-in claim."""
    env = _third_party(tmp_path)
    module = Path(env["PYTHONPATH"]) / "acme_gpu.py"
    module.write_text(module.read_text().replace('["1d17:9000"]', '["1d17:9000", "10de:1e37"]'))
    listed = json.loads(run_cli("plugins", "--json", env=env, check=True).stdout)
    assert listed["owners"]["10de:1e37"] == "acme_gpu"
    assert listed["overridden"] == {"10de:1e37": ["tesla_t10"]}
    t10 = next(p for p in listed["plugins"] if p["name"] == "tesla_t10")
    assert t10["builtin"] and t10["overridden"] == {"10de:1e37": "acme_gpu"}
    text = run_cli("plugins", env=env, check=True).stdout
    assert "10de:1e37 overridden by acme_gpu" in text
    # The winner's device hooks run for the card; the built-in T10's softdeps do not.
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    assert run_doit(f"recipe={recipe}", "vfio", cwd=tmp_path, env=env).returncode == 0
    conf = (tmp_path / "root/etc/modprobe.d/vfio.conf").read_text()
    assert "softdep acmefb pre: vfio-pci" in conf and "softdep nouveau pre: vfio-pci" not in conf


def test_plugin_whose_pci_ids_are_not_a_list_is_one_error_line(tmp_path: Path) -> None:
    """lfspass_pci_ids returning a bare string (not claiming its characters as ids) names the plugin."""
    env = _third_party(tmp_path)
    module = Path(env["PYTHONPATH"]) / "acme_gpu.py"
    module.write_text(module.read_text().replace('return ["1d17:9000"]', 'return "1d17:9000"'))
    assert_one_error_line(run_cli("plugins", env=env), "acme_gpu", "lfspass_pci_ids", "'1d17:9000'")


def test_the_hook_log_sees_what_a_child_process_calls(tmp_path: Path) -> None:
    """The recorder is live: a CLI process's hook calls, routed (doctor) or read directly (pci ids), reach the log."""
    from make_fixtures import build

    log = tmp_path / "hooks.log"
    host = build("dl380", tmp_path / "dl380")
    run_cli("plugins", env={"LFSPASS_TEST_HOOK_LOG": str(log)}, check=True)
    assert log.read_text().split() == ["lfspass_pci_ids"]
    run_cli("doctor", "--host-root", str(host), env={"LFSPASS_TEST_HOOK_LOG": str(log)})
    assert "lfspass_doctor_checks" in log.read_text().split()
