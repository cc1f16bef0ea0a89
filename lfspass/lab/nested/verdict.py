"""The nested lab's run: boot the lab guest (L1) with its image, which runs the VM launcher; judge what L2 saw."""
from __future__ import annotations

import json
import shlex
import re
import time
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import CheckFailed, LfspassError, ToolFailed
from lfspass.fsutil import write_atomic
from lfspass.lab.grub_entry import grub_entry, lab_cmdline
from lfspass.lab.nested.vm_check import check_addresses, l2_vm
from lfspass.lab.qemu_run import GuestFiles, boot_and_collect, kernel_argv
from lfspass.lab.verdict import device_facts, doctor_report, lab_paths
from lfspass.model import Check, Status
from lfspass.host.placement import PAGE_MIB
from lfspass.recipe import Recipe
from lfspass.vm.image import guest_check

DEVICE_ID = "1234:11e8"   # QEMU's edu, the lab's stand-in GPU
L2_LINE = re.compile(r"lfspass-l2: pci (\S+) 0x([0-9a-f]{4}):0x([0-9a-f]{4}) class=(\S+) driver=(\S+)")
# QEMU's warnings in L1 that a real host gives too, with what doctor would tell the user.
KNOWN_WARNINGS = (
    ("no available reset mechanism", "qemu-reset", "device reset",
     "the device has no function-level reset (FLR): QEMU cannot reset it between guest starts, as with many "
     "real cards; a guest that leaves it in a bad state needs a host reboot (lspci -vv shows FLReset- here)"),
)


@dataclass(frozen=True)
class NestedPaths(GuestFiles):
    @property
    def image(self) -> Path:
        return self.dir / "l1-initramfs.cpio.gz"


def nested_paths(recipe: Recipe, vfio_files: bool = True) -> NestedPaths:
    """``<lab dir>/nested`` (the negative case: ``nested-no-vfio``, so the passing files stay)."""
    return NestedPaths(lab_paths(recipe).base / ("nested" if vfio_files else "nested-no-vfio"))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").replace("\r", "")
    except OSError:
        return ""


def qemu_warnings(stderr: str) -> list[dict]:
    """What QEMU said in L1 (once per distinct line), each as a doctor check; known ones explained."""
    out = []
    for line in dict.fromkeys(line.strip() for line in stderr.splitlines() if line.strip()):
        known = next((k for k in KNOWN_WARNINGS if k[0] in line), None)
        if known:
            out.append({"id": known[1], "status": "warn", "title": known[2], "detail": line.strip(), "fix": known[3]})
        else:
            out.append({"id": "qemu-message", "status": "warn", "title": "QEMU message", "detail": line.strip(), "fix": ""})
    return out


def _meminfo(text: str) -> dict[str, int]:
    """``HugePages_Total: 64`` lines -> {"total": 64, ...}."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("HugePages_") and value.strip().isdigit():
            out[key[len("HugePages_"):].lower()] = int(value)
    return out


def hugepage_figures(saved: Path, need: int) -> dict:
    """L1's huge pages before L2, the fewest free while it ran, after; ``need`` = L2's pages."""
    n = saved / "nested"
    before, after = _meminfo(_read(n / "hugepages-before")), _meminfo(_read(n / "hugepages-after"))
    during = [v["free"] for v in map(_meminfo, _read(n / "hugepages-during").splitlines()) if "free" in v]
    return {"l2_pages": need, "total": before.get("total"), "free_before": before.get("free"),
            "free_min_while_l2_ran": min(during) if during else None, "samples": len(during),
            "free_after": after.get("free")}


def hugepages_used(hp: dict) -> bool:
    """L2 took pages from the pool while it ran: the free count dropped below its start."""
    return None not in (hp["free_before"], hp["free_min_while_l2_ran"]) and hp["free_min_while_l2_ran"] < hp["free_before"]


def l2_report(saved: Path) -> dict:
    """What L1 sent about L2: argv, exit status, L2's PCI list, boot time."""
    n = saved / "nested"
    log = _read(n / "l2.log")
    devices = [{"address": a, "id": f"{v}:{d}", "class": c, "driver": None if drv == "none" else drv}
               for a, v, d, c, drv in L2_LINE.findall(log)]
    status = _read(n / "status").strip()
    times = _read(n / "uptime").split()
    up = re.search(r"lfspass-l2: up ([0-9.]+) s", log)
    return {
        "ran": (n / "status").is_file(),
        "argv": [a for a in _read(n / "argv").split("\n") if a] or None,
        "status": int(status) if status.lstrip("-").isdigit() else None,
        "qemu_stderr": _read(n / "qemu.err").strip(),
        "devices": devices, "saw_device": any(d["id"] == DEVICE_ID for d in devices),
        "finished": "lfspass-l2: done" in log,
        "run_s": round(float(times[1]) - float(times[0]), 2) if len(times) == 2 else None,
        "kernel_uptime_s": float(up.group(1)) if up else None,
        "dev_vfio": _read(n / "dev-vfio.txt").strip(),
        "guest_check": guest_check.parse(log),
    }


def boot_l1(recipe: Recipe, release: str, paths: NestedPaths) -> tuple[list[str], float]:
    """Boot the installed kernel as the lab does, with the L1 image and caching-mode VT-d; seconds taken."""
    entry = grub_entry(recipe.root / recipe.boot.grub_cfg)
    kernel = recipe.root / entry.kernel.lstrip("/")
    argv = kernel_argv(kernel, paths.image, lab_cmdline(entry.params), paths.guest_log, paths.host_out, True,
                       recipe.lab.memory, recipe.lab.accel)
    # caching-mode=on is what lets L1 hand an emulated device on (docs/explanation/lab.md).
    argv = [a + ",caching-mode=on" if a.startswith("intel-iommu,") else a for a in argv]
    print(f"nested: booting {kernel.name} with QEMU inside (emulated VT-d, caching mode, edu {DEVICE_ID}); "
          f"L1 memory {recipe.lab.memory}, up to {recipe.lab.timeout} s", flush=True)
    return argv, boot_and_collect(argv, paths, recipe.lab.timeout)


def _failure(kernel: str, release: str, failed: list[Check], l2: dict, launcher: Path,
             paths: NestedPaths, hp: dict | None) -> LfspassError | None:
    """What went wrong first, as the error to raise: the guest's kernel, doctor in L1, the launcher, L2."""
    said = f" (verdict {paths.verdict})"
    if kernel != release:
        return CheckFailed(f"the lab guest ran kernel {kernel}, not {release}; see {paths.guest_log}{said}")
    if failed:
        # Doctor first: a device left on its default driver must read as doctor's finding, not QEMU's.
        return CheckFailed("nested lab failed in the lab guest (L1): "
                           + "; ".join(f"{c.id}: {c.detail}" for c in failed) + said)
    if not l2["ran"]:
        return CheckFailed(f"the lab guest never ran the launcher {launcher}; see {paths.guest_log}{said}")
    if l2["status"] != 0:
        msg = " | ".join(line for line in l2["qemu_stderr"].splitlines() if line.strip())[-400:]
        return ToolFailed(f"QEMU in the lab guest exited with status {l2['status']} running {launcher}: "
                          f"{msg or 'no message'}{said}")
    if not l2["saw_device"]:
        return CheckFailed(f"the second guest (L2) did not see {DEVICE_ID}; it listed "
                           f"{', '.join(d['id'] for d in l2['devices']) or 'nothing'} "
                           f"(log {paths.saved / 'nested' / 'l2.log'}){said}")
    check = l2["guest_check"]
    if check is None or not any(d["id"] == DEVICE_ID for d in check["pci"]):
        return CheckFailed(f"the guest-side check in L2 {'did not report' if check is None else 'did not list'} "
                           f"{DEVICE_ID} (log {paths.saved / 'nested' / 'l2.log'}){said}")
    if hp is not None and not hugepages_used(hp):
        return CheckFailed(f"L2 was to run from {hp['l2_pages']} huge pages, but L1's HugePages_Free never fell below "
                           f"{hp['free_min_while_l2_ran']} (it started at {hp['free_before']} of {hp['total']} reserved) "
                           f"while L2 ran; see {paths.saved / 'nested'}/hugepages-*{said}")
    return None


def run_nested(recipe: Recipe, release: str, vfio_files: bool = True) -> dict:
    """Boot L1, which runs the launcher; write verdict.json; raise CheckFailed (ToolFailed: QEMU in L1) on failure."""
    from lfspass.vm.launcher import launcher_paths
    from lfspass.vm.plan import build_vm_plan

    t0 = time.monotonic()
    paths = nested_paths(recipe, vfio_files)
    plan = build_vm_plan(recipe, l2_vm(recipe))
    check_addresses(plan, Path(recipe.host.sysfs_root))
    launcher = launcher_paths(plan)["sh"]
    argv, boot_s = boot_l1(recipe, release, paths)
    checks, report = doctor_report(paths.saved, recipe)
    facts = (device_facts(paths.saved, recipe) or [{}])[0]
    l2 = l2_report(paths.saved)
    pages = plan.placement.hugepages
    hp = hugepage_figures(paths.saved, plan.memory_mib // PAGE_MIB[pages]) if pages else None
    warnings = qemu_warnings(l2["qemu_stderr"])
    iommu = next(c for c in checks if c.id == "iommu")  # run_doctor's host-wide checks always hold it
    failed = [c for c in checks if c.status == Status.FAIL]
    verdict = {
        "ok": False, "recipe": str(recipe.path), "kernel": release, "vfio_files": vfio_files,
        "l1": {"iommu_enabled": iommu.status == Status.PASS, "device": facts.get("device"),
               "id": facts.get("id"), "group": facts.get("group"), "driver": facts.get("driver"),
               "doctor": report, "qemu": argv, "guest_log": str(paths.guest_log), "host_root": str(paths.saved)},
        "launcher": {"path": str(launcher), "argv": l2["argv"], "status": l2["status"]},
        "l2": {"saw_device": l2["saw_device"], "device_id": DEVICE_ID, "devices": l2["devices"],
               "boot_s": l2["run_s"], "kernel_uptime_s": l2["kernel_uptime_s"], "finished": l2["finished"],
               "guest_check": l2["guest_check"], "hugepages": hp,
               "log": str(paths.saved / "nested" / "l2.log")},
        "plugins": {"device_args": plan.device_args, "cpu_flags": plan.cpu_flags,
                    "cpu_flags_used": plan.accel != "tcg",  # TCG runs `-cpu max`: host CPU flags stay out
                    "in_argv": bool(l2["argv"]) and all(a in l2["argv"] for a in plan.device_args)},
        "qemu_warnings": warnings, "qemu_stderr": l2["qemu_stderr"],
        "timings": {"l1_boot_s": round(boot_s, 2), "l2_boot_s": l2["run_s"]},
    }
    error = _failure(report["kernel"], release, failed, l2, launcher, paths, hp)
    verdict["ok"] = error is None
    verdict["timings"]["total_s"] = round(time.monotonic() - t0, 2)
    write_atomic(paths.verdict, json.dumps(verdict, indent=2, sort_keys=True) + "\n")
    for c in checks:
        if c.status in (Status.WARN, Status.FAIL):
            print(f"nested: doctor {c.status.upper()} {c.id}: {c.detail}")
    for w in warnings if error is None else []:  # a failure has its own line; QEMU's stay in the verdict
        print(f"nested: doctor WARN {w['id']}: {w['detail']}" + (f" ({w['fix']})" if w["fix"] else ""))
    if error:
        raise error
    l1, seen = verdict["l1"], next(d for d in l2["devices"] if d["id"] == DEVICE_ID)
    print(f"nested: L1 IOMMU enabled ({iommu.detail}); device {l1['device']} {l1['id']} in IOMMU group "
          f"{l1['group']}, driver {l1['driver']}")
    print(f"nested: L1 ran {launcher}: {shlex.join(l2['argv'] or ['?'])}")
    print(f"nested: PASS: L2 saw {DEVICE_ID} at {seen['address']} (driver {seen['driver'] or 'none'}) through "
          f"{launcher.name}; L2 ran {l2['run_s']} s, whole run {verdict['timings']['total_s']:.1f} s; "
          f"verdict {paths.verdict}")
    if hp is not None:
        print(f"nested: L2 ran from huge pages: L1's HugePages_Free {hp['free_before']} -> {hp['free_min_while_l2_ran']} "
              f"while it ran -> {hp['free_after']} after (L2 needs {hp['l2_pages']} of {hp['total']} reserved)")
    return verdict
