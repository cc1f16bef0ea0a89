"""One lab run judged: boot the installed kernel as GRUB would (``-kernel``, or through real GRUB when
``[boot] initrd`` is set), let `lfspass doctor` read the host state the guest saved, write verdict.json."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import CheckFailed, InputError
from lfspass.fsutil import write_atomic
from lfspass.lab.grub_entry import grub_entry, lab_cmdline
from lfspass.lab.qemu_run import GuestFiles, boot_and_collect, kernel_argv
from lfspass.model import Check, Status
from lfspass.plan import kernel_paths
from lfspass.recipe import Recipe


@dataclass(frozen=True)
class LabPaths(GuestFiles):
    base: Path           # the recipe's lab folder (the initramfs is the same for every run)

    @property
    def initramfs(self) -> Path:
        return self.base / "initramfs.cpio.gz"


def lab_paths(recipe: Recipe, iommu: bool = True) -> LabPaths:
    """``[lab] dir`` (default: beside the root); the negative lab keeps its own files apart."""
    base = Path(recipe.lab.dir) if recipe.lab.dir else recipe.root.parent
    return LabPaths(base if iommu else base / "no-iommu", base)


def doctor_report(saved: Path, recipe: Recipe) -> tuple[list[Check], dict]:
    """Doctor's checks of the saved host, and the report the verdict keeps."""
    from lfspass.doctor.run import run_doctor
    from lfspass.host.read import Host
    from lfspass.plugins import get_plugin_manager

    host = Host(saved)
    checks = run_doctor(host, recipe, get_plugin_manager())
    return checks, {"host_root": str(saved), "kernel": host.release, "checks": [c.as_dict() for c in checks],
                    "status": "fail" if any(c.status == Status.FAIL for c in checks) else "ok"}


def device_facts(saved: Path, recipe: Recipe) -> list[dict]:
    """Address, id, IOMMU group and driver of each recipe device in the saved host (None where absent)."""
    from lfspass.host.read import Host

    host, out = Host(saved), []
    for spec in recipe.devices:
        dev = host.devices.get(spec.address) if spec.address else next(iter(host.find_id(spec.id)), None)
        out.append({"device": dev.address if dev else None, "id": (dev.id if dev else None) or spec.id,
                    "group": dev.iommu_group if dev else None, "driver": dev.driver if dev else None})
    return out


def external_modules(saved: Path, recipe: Recipe) -> dict[str, str]:
    """name -> "loaded from updates/<name>/<file>" for each of the recipe's external modules, as the guest
    found them (lab-init.sh's external-modules.txt); anything else says why it is not loaded."""
    try:
        rows = [line.split() for line in (saved / "external-modules.txt").read_text().splitlines()]
    except OSError:
        rows = []
    out = {}
    for spec in recipe.kernel.external_modules:
        mine = [r for r in rows if len(r) == 4 and r[1].startswith(f"updates/{spec.name}/")]
        if not mine:
            out[spec.name] = f"NOT loaded: the guest has nothing under updates/{spec.name}/"
        elif bad := [r for r in mine if r[3] != "loaded" or r[2] != r[1]]:
            m, file, dep, state = bad[0]
            out[spec.name] = (f"NOT loaded: modprobe {m} failed" if state != "loaded" else
                              f"NOT loaded from updates/: modules.dep names {dep} for {m}, not {file}")
        else:
            out[spec.name] = "loaded from " + ", ".join(r[1] for r in mine)
    return out


def run_lab(recipe: Recipe, release: str, iommu: bool = True) -> dict:
    """Boot, save, judge; write verdict.json; raise CheckFailed with doctor's findings on failure."""
    t0 = time.monotonic()
    paths = lab_paths(recipe, iommu)
    cfg = recipe.root / recipe.boot.grub_cfg
    entry = grub_entry(cfg)
    kernel = recipe.root / entry.kernel.lstrip("/")
    if kernel != kernel_paths(recipe, release).vmlinuz:
        raise InputError(f"{cfg}: the newest lfspass entry boots {entry.kernel}, not the recipe's kernel "
                         f"{release}; run `doit grub`")
    if not kernel.is_file():
        raise InputError(f"{kernel} not found (named by {cfg}); run `doit kernel`")
    grub = None
    if recipe.boot.initrd:
        # [boot] initrd names where the initramfs goes: real GRUB boots the entry
        # (docs/explanation/lab.md#booting-through-real-grub-under-ovmf).
        from lfspass.lab.boot_grub import grub_boot

        grub = grub_boot(recipe, paths, paths.dir / "boot.ext2", paths.initramfs, iommu, "boot")
        argv, cmdline, boot_s = grub.pop("qemu"), (grub["cmdline"] or "").split(), grub["boot_s"]
    else:
        cmdline = lab_cmdline(entry.params)
        argv = kernel_argv(kernel, paths.initramfs, cmdline, paths.guest_log, paths.host_out, iommu,
                           recipe.lab.memory, recipe.lab.accel)
        print(f"lab: booting {kernel.name} in QEMU ({'emulated VT-d' if iommu else 'NO IOMMU'}, edu 1234:11e8); "
              f"cmdline from {cfg.name}: {' '.join(cmdline)}", flush=True)
        boot_s = boot_and_collect(argv, paths, recipe.lab.timeout)
    t1 = time.monotonic()
    checks, report = doctor_report(paths.saved, recipe)
    devices = device_facts(paths.saved, recipe)
    if report["kernel"] != release:
        raise CheckFailed(f"the lab guest ran kernel {report['kernel']}, not {release}; see {paths.guest_log}")
    failed = [c for c in checks if c.status == Status.FAIL]
    external = external_modules(paths.saved, recipe)
    unloaded = [f"external module {name}: {said}" for name, said in external.items() if not said.startswith("loaded ")]
    iommu_check = next((c for c in checks if c.id == "iommu"), None)
    first = devices[0] if devices else {}
    verdict = {
        "ok": not failed and not unloaded, "recipe": str(recipe.path), "kernel": release, "vmlinuz": str(kernel),
        "cmdline": " ".join(cmdline), "emulated_iommu": iommu, "vfio": recipe.kernel.vfio,
        "iommu_enabled": bool(iommu_check and iommu_check.status == Status.PASS),
        "device": first.get("device"), "id": first.get("id"), "group": first.get("group"), "driver": first.get("driver"),
        "devices": devices, "external_modules": external, "doctor": report, "guest_log": str(paths.guest_log), "host_root": str(paths.saved),
        "timings": {"boot_s": round(boot_s, 2), "doctor_s": round(time.monotonic() - t1, 2),
                    "total_s": round(time.monotonic() - t0, 2)},
        "qemu": argv, "grub": grub,
    }
    write_atomic(paths.verdict, json.dumps(verdict, indent=2, sort_keys=True) + "\n")
    for c in checks:
        if c.status in (Status.WARN, Status.FAIL):
            print(f"lab: doctor {c.status.upper()} {c.id}: {c.detail}")
    if failed or unloaded:
        raise CheckFailed("lab failed: " + "; ".join([f"{c.id}: {c.detail}" for c in failed] + unloaded)
                          + f" (guest log {paths.guest_log}, verdict {paths.verdict})")
    print(f"lab: IOMMU enabled ({iommu_check.detail if iommu_check else '?'})")
    for d in devices:
        print(f"lab: device {d['device']} {d['id']} in IOMMU group {d['group']}, driver {d['driver']}")
    for name, said in external.items():
        print(f"lab: external module {name} {said}")
    print(f"lab: PASS in {verdict['timings']['total_s']:.1f} s (guest boot {boot_s:.1f} s); "
          f"verdict {paths.verdict}, guest log {paths.guest_log}")
    return verdict
