"""[vms.tuning] and compute cards on the seed's DL380 as two NUMA nodes (the T10 on node 1).

Golden argv / launcher / libvirt XML (``python tests/regen_golden.py tuning`` rewrites them), the
XML through virt-xml-validate, the argv's placement through a real QEMU on this machine's node 0,
the GRUB entry's huge pages, and doctor on a VM placed on the wrong node.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli, run_doit
from lfspass.boot.grub import entry_cmdline
from lfspass.errors import VmError
from lfspass.plan import build_plan
from lfspass.recipe import load_recipe
from lfspass.vm.launcher import domain_xml, script_text
from lfspass.vm.plan import build_vm_plan
from lfspass.vm.qemu_argv import Boot, build_argv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from make_fixtures import build

GOLDEN = Path(__file__).resolve().parent / "golden-tuning"
NODE1 = "14-27,42-55"   # the second socket's cores and siblings (tests/fixture_data.py DL380_NODES)

CASES = {
    # The T10 VM with nothing said: numa follows the card (node 1), 1G pages, no VGA, no VNC.
    "t10-node1-1g": 'memory = "16G"\ncpus = 8\ndevices = ["82:00.0"]\ntuning = { hugepages = "1G" }\n',
    # Pinned by hand on node 1, 2M pages; the recipe asks for VNC on the compute card.
    "t10-pinned-2m": ('memory = "8G"\ncpus = 4\ndevices = ["82:00.0"]\nvnc = { enabled = true, display = 2 }\n'
                      'tuning = { cpus = [14, 15, 42, 43], hugepages = "2M" }\n'),
    # The P10 (node 0) by id, placement switched off: only the compute-card rule applies.
    "p10-numa-off": 'memory = "32G"\ncpus = 8\ndevices = ["10de:1b39"]\ntuning = { numa = "off" }\n',
}


@pytest.fixture(scope="module")
def two_node(tmp_path_factory) -> Path:
    return build("dl380-two-node", tmp_path_factory.mktemp("hosts") / "dl380-two-node")


def write_recipe(folder: Path, sysroot: Path, vms: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (f'[host]\nroot = "root"\nsysfs_root = "{sysroot}"\n[kernel]\nversion = "6.10.5"\n'
            '[boot]\nroot_device = "/dev/sda2"\n'
            '[[devices]]\naddress = "82:00.0"\n[[devices]]\nid = "10de:1b39"\n' + vms)
    (folder / "r.toml").write_text(text)
    return folder / "r.toml"


def _vm(name: str, body: str) -> str:
    return f'[[vms]]\nname = "{name}"\naccel = "kvm"\ndir = "/srv/lfspass/{name}"\n{body}'


def _plan(tmp: Path, sysroot: Path, case: str):
    recipe = load_recipe(write_recipe(tmp / case, sysroot, _vm(case, CASES[case])))
    return build_vm_plan(recipe, recipe.vms[0])


def golden_texts(case: str, tmp: Path, sysroot: Path) -> dict[str, str]:
    plan = _plan(tmp, sysroot, case)
    argv = build_argv(plan)
    texts = {f"{case}.argv": "\n".join(argv) + "\n", f"{case}.sh": script_text(plan, argv),
             f"{case}.xml": domain_xml(plan, plan.dir / f"{plan.name}.xml")}
    return {name: text.replace(str(sysroot), "@HOST@").replace(str(tmp), "@TMP@") for name, text in texts.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_tuning(case, tmp_path, two_node):
    """Compared with the committed files only; `python tests/regen_golden.py tuning` rewrites them."""
    for name, text in golden_texts(case, tmp_path, two_node).items():
        path = GOLDEN / name
        assert path.exists(), f"{path} missing: python tests/regen_golden.py tuning, then review it"
        assert text == path.read_text(), f"{path} differs; if the change is meant: python tests/regen_golden.py tuning"
    (tmp_path / "d.xml").write_text((GOLDEN / f"{case}.xml").read_text())
    proc = subprocess.run(["virt-xml-validate", str(tmp_path / "d.xml"), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_t10_vm_runs_on_the_t10s_node(tmp_path, two_node):
    """The acceptance: launcher and XML put vCPUs and memory on node 1, where the T10 is."""
    plan = _plan(tmp_path, two_node, "t10-node1-1g")
    argv = build_argv(plan)
    assert argv[:4] == ["taskset", "-c", NODE1, "qemu-system-x86_64"]
    backend = argv[argv.index("-object") + 1]
    assert backend == "memory-backend-memfd,id=mem0,size=16384M,hugetlb=on,hugetlbsize=1G,host-nodes=1,policy=bind"
    assert argv[argv.index("-machine") + 1] == "q35,memory-backend=mem0"
    script = script_text(plan, argv)
    assert f"exec taskset -c {NODE1} qemu-system-x86_64 \\\n" in script
    dom = ET.fromstring(domain_xml(plan, plan.dir / "t.xml"))
    assert dom.find("numatune/memory").attrib == {"mode": "strict", "nodeset": "1"}
    pins = dom.findall("cputune/vcpupin")
    assert [p.get("vcpu") for p in pins] == [str(n) for n in range(8)]
    assert {p.get("cpuset") for p in pins} == {NODE1} == {dom.find("cputune/emulatorpin").get("cpuset")}
    assert dom.find("memoryBacking/hugepages/page").attrib == {"size": "1048576", "unit": "KiB"}
    # A compute card: no emulated VGA, no VNC, no graphics; the serial console stays.
    assert "-vnc" not in argv and "-vga" not in argv and argv[argv.index("-display") + 1] == "none"
    assert dom.find("devices/graphics") is None and dom.find("devices/video/model").get("type") == "none"
    assert argv[argv.index("-serial") + 1] == "mon:stdio" and dom.find("devices/serial") is not None
    assert "compute card" in script and "vnc.enabled = true" in script
    # An install boots without the card: the same node and pages, and its VNC screen.
    install = build_argv(plan, Boot(passthrough=False))
    assert install[:3] == argv[:3] and backend in install and install[install.index("-vnc") + 1] == "127.0.0.1:0"
    assert not any(a.startswith("vfio-pci") for a in install)


def test_asked_vnc_and_explicit_cpus(tmp_path, two_node):
    plan = _plan(tmp_path, two_node, "t10-pinned-2m")
    argv = build_argv(plan)
    assert argv[:3] == ["taskset", "-c", "14-15,42-43"]
    assert argv[argv.index("-vnc") + 1] == "127.0.0.1:2" and argv[argv.index("-vga") + 1] == "std"
    assert "hugetlbsize=2M,host-nodes=1,policy=bind" in argv[argv.index("-object") + 1]
    dom = ET.fromstring(domain_xml(plan, plan.dir / "t.xml"))
    assert dom.find("devices/graphics").get("port") == "5902"
    assert {p.get("cpuset") for p in dom.findall("cputune/vcpupin")} == {"14-15,42-43"}
    # numa = "off" and a card on node 0: nothing placed, nothing bound.
    off = build_argv(_plan(tmp_path, two_node, "p10-numa-off"))
    assert off[0] == "qemu-system-x86_64" and not any(a.startswith("memory-backend") for a in off)
    assert "-vnc" not in off


def test_one_node_host_places_nothing(tmp_path):
    """Without sys/devices/system/node (or with one node) numa = auto does nothing: the seed's goldens stand."""
    one = build("dl380", tmp_path / "dl380")
    recipe = load_recipe(write_recipe(tmp_path / "r", one, _vm("t", 'devices = ["82:00.0"]\n')))
    argv = build_argv(build_vm_plan(recipe, recipe.vms[0]))
    assert argv[0] == "qemu-system-x86_64" and "memory-backend" not in " ".join(argv)


def _qmp(proc: subprocess.Popen, command: str) -> dict:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"execute": command}) + "\n")
    proc.stdin.flush()
    while True:
        reply = json.loads(proc.stdout.readline())
        if "return" in reply or "error" in reply:
            return reply


def test_real_qemu_puts_vcpu_threads_and_memory_where_the_argv_says(tmp_path, two_node):
    """The placement part of the argv, run by this machine's QEMU on its node 0 and CPU 0."""
    recipe = load_recipe(write_recipe(tmp_path, two_node, _vm("q", 'memory = "256M"\ncpus = 2\ndevices = ["10de:1b39"]\n'
                                                               'tuning = { numa = "device", cpus = [0] }\n')))
    plan = build_vm_plan(recipe, recipe.vms[0])
    argv = build_argv(plan)
    assert argv[:3] == ["taskset", "-c", "0"]
    assert argv[argv.index("-object") + 1].endswith(",host-nodes=0,policy=bind")   # the P10 is on node 0
    keep = ["-machine", "-m", "-smp", "-object"]
    run = argv[:4] + [x for i, a in enumerate(argv) if a in keep for x in (a, argv[i + 1])]
    proc = subprocess.Popen([*run, "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        greeting = proc.stdout.readline()
        assert "QMP" in greeting, proc.stderr.read() if proc.stderr else ""
        assert "return" in _qmp(proc, "qmp_capabilities")
        cpus = _qmp(proc, "query-cpus-fast")["return"]
        assert len(cpus) == 2
        for cpu in cpus:
            assert os.sched_getaffinity(cpu["thread-id"]) == {0}
        backend = _qmp(proc, "query-memdev")["return"]
        assert [(m["size"], m["host-nodes"], m["policy"]) for m in backend] == [(256 << 20, [0], "bind")]
        _qmp(proc, "quit")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_grub_entry_reserves_the_pages_on_the_vms_node(tmp_path, two_node):
    vms = (_vm("a", CASES["t10-node1-1g"]) + _vm("b", 'memory = "4G"\ndevices = ["82:00.0"]\ntuning = { hugepages = "1G" }\n')
           + _vm("c", 'memory = "3G"\ntuning = { hugepages = "2M" }\n'))
    words = entry_cmdline(build_plan(load_recipe(write_recipe(tmp_path, two_node, vms)), "6.10.5")).split()
    params = words[words.index("default_hugepagesz=1G"):][:5]
    # a + b on node 1 (16 + 4 pages of 1G); c bound nowhere: 1536 pages of 2M the kernel spreads.
    assert params == ["default_hugepagesz=1G", "hugepagesz=1G", "hugepages=1:20", "hugepagesz=2M", "hugepages=1536"]
    none = build_plan(load_recipe(write_recipe(tmp_path / "n", two_node, _vm("a", 'devices = ["82:00.0"]\n'))), "6.10.5")
    assert "hugepage" not in entry_cmdline(none)


def test_bad_tuning_is_one_line(tmp_path, two_node):
    cases = [('memory = "3584M"\ntuning = { hugepages = "1G" }\n', "not a whole number of 1G huge pages"),
             ('tuning = { numa = "device" }\n', "no passthrough device"),
             ('tuning = { cpus = [99] }\n', "CPU 99 is not on this host"),
             ('tuning = { hugepages = "4M" }\n', "expected one of off, 2M, 1G")]
    for i, (body, needle) in enumerate(cases):
        recipe_path = write_recipe(tmp_path / str(i), two_node, _vm("v", body))
        if i < 3:
            recipe = load_recipe(recipe_path)
            with pytest.raises(VmError, match=needle):
                build_vm_plan(recipe, recipe.vms[0])
    proc = run_doit("vm", f"recipe={tmp_path / '2/r.toml'}", cwd=tmp_path / "2")
    assert_one_error_line(proc, "vms[0].tuning.cpus", "CPU 99")
    proc = run_doit("vm", f"recipe={tmp_path / '3/r.toml'}", cwd=tmp_path / "3")
    assert_one_error_line(proc, "tuning.hugepages", "4M")
    assert not (tmp_path / "2/root").exists()


def test_doctor_flags_a_vm_placed_on_the_other_node(tmp_path, two_node):
    vms = _vm("good", CASES["t10-node1-1g"]) + _vm("wrong", 'memory = "8G"\ndevices = ["82:00.0"]\n'
                                                   'tuning = { cpus = [0, 1, 2, 3] }\n')
    vms += _vm("loose", 'devices = ["82:00.0"]\ntuning = { numa = "off" }\n')
    path = write_recipe(tmp_path, two_node, vms)
    proc = run_cli("doctor", "--host-root", str(two_node), "--recipe", str(path), "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["device-numa[82:00.0]"]["detail"] == f"node 1 (CPUs {NODE1})"
    assert checks["vm-numa[good]"]["status"] == "pass" and "memory on node 1" in checks["vm-numa[good]"]["detail"]
    wrong = checks["vm-numa[wrong]"]
    assert wrong["status"] == "warn" and "CPU 0-3 are on node 0" in wrong["detail"] and "card is on node 1" in wrong["detail"]
    assert f"cpus to CPUs of node 1 ({NODE1})" in wrong["fix"]
    assert checks["vm-numa[loose]"]["status"] == "warn" and 'numa = "device"' in checks["vm-numa[loose]"]["fix"]
    # 16 pages of 1G wanted on node 1; the fixture has 8 there (a plain hugepages=16 split them 8 + 8).
    pages = checks["hugepages[1G]"]
    assert pages["status"] == "fail" and "node 1: 8 free of 8, the VMs need 16" in pages["detail"]
    enough = build("dl380-two-node", tmp_path / "enough")
    for name in ("nr_hugepages", "free_hugepages"):
        (enough / "sys/devices/system/node/node1/hugepages/hugepages-1048576kB" / name).write_text("16\n")
    proc = run_cli("doctor", "--host-root", str(enough), "--recipe", str(path), "--json")
    checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["hugepages[1G]"]["status"] == "pass", checks["hugepages[1G]"]


def test_plugins_say_what_kind_of_card_it_is(tmp_path, two_node, monkeypatch):
    """lfspass_device_kind: the T10 plugin says compute; a plugin's "display" brings VGA and VNC back;
    without the T10 plugin the PCI class (0302) still decides."""
    from lfspass import hookimpl
    from lfspass.plugins import call_device, get_plugin_manager

    class Outputs:
        @hookimpl
        def lfspass_pci_ids(self):
            return []

        @hookimpl
        def lfspass_device_kind(self, vm, device):
            return ["display"] if device.id == "10de:1e37" else None

    pm = get_plugin_manager()
    plan = _plan(tmp_path / "own", two_node, "t10-node1-1g")
    assert call_device(pm, "lfspass_device_kind", plan.devices[0], vm=plan.vm) == ["compute"]
    pm.register(Outputs(), name="test-outputs")
    try:
        shown = _plan(tmp_path / "shown", two_node, "t10-node1-1g")
    finally:
        pm.unregister(name="test-outputs")
    assert shown.display and "-vnc" in build_argv(shown) and "compute card" not in script_text(shown, build_argv(shown))
    monkeypatch.setenv("LFSPASS_DISABLE_PLUGINS", "tesla_t10")
    get_plugin_manager.cache_clear()   # a manager made without the T10 plugin, then the usual one again
    try:
        by_class = _plan(tmp_path / "class", two_node, "t10-node1-1g")
    finally:
        monkeypatch.delenv("LFSPASS_DISABLE_PLUGINS")
        get_plugin_manager.cache_clear()
    assert by_class.devices[0].plugin == "generic" and not by_class.display and "-vnc" not in build_argv(by_class)
