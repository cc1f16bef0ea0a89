"""The runtime-bind lab's run: boot the lab guest with e1000e and a shared group beside edu, let it
run `lfspass bind` / `release` (lfspass/templates/lab-bind.sh), judge each step, write verdict.json."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import CheckFailed, InputError
from lfspass.fsutil import write_atomic
from lfspass.lab.grub_entry import grub_entry, lab_cmdline
from lfspass.lab.qemu_run import GuestFiles, boot_and_collect, kernel_argv
from lfspass.lab.verdict import device_facts, doctor_report, lab_paths
from lfspass.model import Status
from lfspass.plan import kernel_paths
from lfspass.recipe import Recipe

E1000E_ID = "8086:10d3"     # QEMU's e1000e (82574L); the lab kernel has its driver built in
TESTDEV_ID = "1b36:0005"    # QEMU's pci-testdev: no driver, the second member of the shared group
BRIDGE = "lfspass-br0"
# Beside edu: e1000e on the root bus (its own IOMMU group), and behind one conventional PCI
# bridge a second e1000e and pci-testdev: the kernel puts a bridge's devices in the bridge's group.
EXTRA_DEVICES = ["-device", "e1000e,addr=03.0",
                 "-device", f"pci-bridge,id={BRIDGE},chassis_nr=1,addr=04.0",
                 "-device", f"e1000e,bus={BRIDGE},addr=01.0",
                 "-device", f"pci-testdev,bus={BRIDGE},addr=02.0"]
# What each step must leave (lfspass/templates/lab-bind.sh): exit 0 or not, and the drivers after.
# Roles: e1000e = the one on its own, group_e1000e / group_testdev = the shared group's members.
EXPECT: dict[str, tuple[bool, dict[str, str | None]]] = {
    "boot": (True, {"e1000e": "e1000e", "group_e1000e": "e1000e", "group_testdev": None}),
    "bind": (True, {"e1000e": "vfio-pci"}),
    "cdev": (True, {"e1000e": "vfio-pci"}),
    "release-held": (False, {"e1000e": "vfio-pci"}),
    "release": (True, {"e1000e": "e1000e"}),
    "group-refused": (False, {"group_e1000e": "e1000e", "group_testdev": None}),
    "group-bind": (True, {"group_e1000e": "vfio-pci", "group_testdev": "vfio-pci"}),
    "group-release": (True, {"group_e1000e": "e1000e", "group_testdev": None}),
}


@dataclass(frozen=True)
class BindPaths(GuestFiles):
    @property
    def image(self) -> Path:
        return self.dir / "initramfs.cpio.gz"


def bind_paths(recipe: Recipe) -> BindPaths:
    """``<lab dir>/bind``: this lab's image, logs and verdict, apart from the plain lab boot's."""
    return BindPaths(lab_paths(recipe).base / "bind")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").replace("\r", "")
    except OSError:
        return ""


def read_steps(saved: Path) -> tuple[dict[str, str], dict[str, int], list[dict]]:
    """The guest's devices (role -> address), their IOMMU groups (address -> group) and its steps,
    as lab-bind.sh wrote them."""
    b = saved / "bind"
    roles: dict[str, str] = {}
    for word in _read(b / "devices.txt").split("\n")[0].split()[1:]:
        role, _, address = word.partition("=")
        if address and address != "none":
            roles[role] = address
    groups = {a: int(g) for line in _read(b / "devices.txt").splitlines()[1:] if line.startswith("group ")
              for a, g in [line.split()[1:3]] if g.isdigit()}
    by_address = {a: r for r, a in roles.items()}
    steps = []
    for line in _read(b / "steps.txt").splitlines():
        fields = line.split("\t")
        if len(fields) != 5:
            continue
        name, rc, command, drivers, nets = fields
        after = {}
        for pair in drivers.split():
            address, _, driver = pair.partition("=")
            after[by_address.get(address, address)] = None if driver == "none" else driver
        steps.append({"step": name, "command": command, "exit": int(rc) if rc.lstrip("-").isdigit() else None,
                      "drivers_after": after, "net": [n for n in nets.split(",") if n],
                      "output": _read(b / f"{name}.out").strip()})
    return roles, groups, steps


def judge(step: dict, roles: dict[str, str], holder: str, boot_net: list[str]) -> list[str]:
    """What is wrong with one step (empty: as expected); ``boot_net``: the interfaces at boot."""
    if step["step"] not in EXPECT:
        return []
    zero, drivers = EXPECT[step["step"]]
    wrong = []
    if (step["exit"] == 0) != zero:
        wrong.append(f"exit {step['exit']}, expected {'0' if zero else 'a refusal'}")
    for role, want in drivers.items():
        got = step["drivers_after"].get(role)
        if got != want:
            wrong.append(f"{role} ({roles.get(role)}) on {got or 'no driver'}, expected {want or 'no driver'}")
    # On vfio-pci the e1000e has no interface; given back, it has one again (a new one, same name).
    if step["step"] in ("bind", "group-bind") and len(step["net"]) >= len(boot_net):
        wrong.append(f"the interfaces are still {', '.join(step['net'])}: none went away")
    if step["step"] in ("release", "group-release") and len(step["net"]) != len(boot_net):
        wrong.append(f"interfaces {', '.join(step['net']) or 'none'}, at boot {', '.join(boot_net)}")
    if step["step"] == "cdev" and not re.search(r"^vfio\d+$", step["output"], re.M):
        wrong.append("no vfio-dev/vfioN cdev for the bound e1000e (kernel without VFIO_DEVICE_CDEV?)")
    if step["step"] == "release-held" and holder and f"PID {holder}" not in step["output"]:
        wrong.append(f"the refusal does not name the holder PID {holder}")
    if step["step"] == "group-refused" and roles.get("group_e1000e", "?")[5:] not in step["output"]:
        wrong.append("the refusal does not name the group's e1000e")
    return wrong


def run_bind_lab(recipe: Recipe, release: str) -> dict:
    """Boot, bind, release, judge; write verdict.json; CheckFailed naming the first wrong step."""
    t0 = time.monotonic()
    paths = bind_paths(recipe)
    cfg = recipe.root / recipe.boot.grub_cfg
    entry = grub_entry(cfg)
    kernel = recipe.root / entry.kernel.lstrip("/")
    if kernel != kernel_paths(recipe, release).vmlinuz or not kernel.is_file():
        raise InputError(f"{cfg}: the newest lfspass entry boots {entry.kernel}, not the installed kernel "
                         f"{release}; run `doit kernel grub`")
    cmdline = lab_cmdline(entry.params)
    argv = kernel_argv(kernel, paths.image, cmdline, paths.guest_log, paths.host_out, True,
                       recipe.lab.memory, recipe.lab.accel)
    at = argv.index("edu") + 1
    argv[at:at] = EXTRA_DEVICES
    print(f"labbind: booting {kernel.name} (emulated VT-d; edu, e1000e {E1000E_ID}, a pci-bridge group of "
          f"e1000e + pci-testdev); up to {recipe.lab.timeout} s", flush=True)
    boot_s = boot_and_collect(argv, paths, recipe.lab.timeout)
    checks, report = doctor_report(paths.saved, recipe)
    roles, groups, steps = read_steps(paths.saved)
    holder = _read(paths.saved / "bind" / "holder.txt").split(" ")[0].strip()
    boot_net: list[str] = next((s["net"] for s in steps if s["step"] == "boot"), [])
    results = []
    for s in steps:
        s["wrong"] = judge(s, roles, holder, boot_net)
        results.append(s)
    missing = [name for name in EXPECT if name not in {s["step"] for s in steps}]
    failed_checks = [c for c in checks if c.status == Status.FAIL]
    verdict = {
        "ok": False, "recipe": str(recipe.path), "kernel": report["kernel"], "cmdline": " ".join(cmdline),
        "devices": roles, "iommu_groups": groups, "holder_pid": holder or None, "steps": results, "missing_steps": missing,
        "edu": (device_facts(paths.saved, recipe) or [{}])[0], "doctor": report, "qemu": argv,
        # doctor's iommufd checks on the saved guest (vfio_backend = "iommufd"): /dev/iommu, edu's cdev.
        "cdev_checks": {c.id: str(c.status) for c in checks if c.id == "iommufd" or c.id.startswith("vfio-cdev")},
        "guest_log": str(paths.guest_log), "host_root": str(paths.saved),
        "timings": {"boot_s": round(boot_s, 2)},
    }
    problems = ([f"the lab guest ran kernel {report['kernel']}, not {release}"] if report["kernel"] != release else []) \
        + [f"doctor {c.id}: {c.detail}" for c in failed_checks] \
        + [f"step {s['step']} (`{s['command']}`): {'; '.join(s['wrong'])}" for s in results if s["wrong"]] \
        + ([f"steps never ran: {', '.join(missing)} ({_read(paths.saved / 'bind' / 'error').strip() or 'see the guest log'})"]
           if missing else [])
    verdict["ok"] = not problems
    verdict["timings"]["total_s"] = round(time.monotonic() - t0, 2)
    write_atomic(paths.verdict, json.dumps(verdict, indent=2, sort_keys=True) + "\n")
    for s in results:
        drivers = ", ".join(f"{r} {d or 'none'}" for r, d in s["drivers_after"].items())
        print(f"labbind: {s['step']}: `{s['command']}` exit {s['exit']}; after: {drivers}; "
              f"net: {' '.join(s['net']) or '-'}" + (f"  WRONG: {'; '.join(s['wrong'])}" if s["wrong"] else ""))
    if verdict["cdev_checks"]:
        print("labbind: doctor on the saved guest: " + ", ".join(f"{k} {v}" for k, v in verdict["cdev_checks"].items()))
    if problems:
        raise CheckFailed("runtime-bind lab failed: " + "; ".join(problems)
                          + f" (guest log {paths.guest_log}, verdict {paths.verdict})")
    print(f"labbind: PASS in {verdict['timings']['total_s']:.1f} s (guest {boot_s:.1f} s); verdict {paths.verdict}")
    return verdict
