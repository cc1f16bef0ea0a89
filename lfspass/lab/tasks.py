"""The virtual lab: boot the installed kernel as GRUB would, then let `lfspass doctor` judge the guest."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

from lfspass.errors import LfspassError
from lfspass.fsutil import write_atomic
from lfspass.model import Check, Status
from lfspass.plan import kernel_paths
from lfspass.recipe import Recipe


@dataclass(frozen=True)
class LabPaths:
    dir: Path            # this run's outputs
    base: Path           # the recipe's lab folder (the initramfs is the same for every run)

    @property
    def initramfs(self) -> Path:
        return self.base / "initramfs.cpio.gz"

    @property
    def guest_log(self) -> Path:
        return self.dir / "guest.log"

    @property
    def host_out(self) -> Path:
        return self.dir / "guest-host.b64"   # the guest's second serial port

    @property
    def saved(self) -> Path:
        return self.dir / "host"             # a `doctor --save` folder, read with --host-root

    @property
    def verdict(self) -> Path:
        return self.dir / "verdict.json"


def lab_paths(recipe: Recipe, iommu: bool = True) -> LabPaths:
    """``[lab] dir`` (default: beside the root); the negative lab keeps its own files apart."""
    base = Path(recipe.lab.dir) if recipe.lab.dir else recipe.root.parent
    return LabPaths(base if iommu else base / "no-iommu", base)


def _switch(name: str, value: str | None) -> bool | None:
    if value in (None, ""):
        return None
    if value.lower() in ("on", "1", "true", "yes"):
        return True
    if value.lower() in ("off", "0", "false", "no"):
        return False
    raise LfspassError(f"{name}={value!r}: expected on or off (e.g. `doit lab iommu=off` runs the negative lab)")


def lab_options(recipe: Recipe) -> tuple[bool, bool]:
    """(iommu, cached): ``doit iommu=off`` / $LFSPASS_LAB_IOMMU over ``[lab] iommu``;
    ``doit lab=cached`` / $LFSPASS_LAB_CACHED=1 reuse a passing verdict."""
    from doit import get_var

    iommu = _switch("doit variable iommu", get_var("iommu", None))
    if iommu is None:
        iommu = _switch("LFSPASS_LAB_IOMMU", os.environ.get("LFSPASS_LAB_IOMMU"))
    cached = get_var("lab", None) == "cached" or bool(_switch("LFSPASS_LAB_CACHED", os.environ.get("LFSPASS_LAB_CACHED")))
    return recipe.lab.iommu if iommu is None else iommu, cached


def _doctor(saved: Path, recipe: Recipe) -> tuple[list[Check], dict]:
    from lfspass.doctor.run import run_doctor
    from lfspass.host.read import Host
    from lfspass.plugins import get_plugin_manager

    host = Host(saved)
    checks = run_doctor(host, recipe, get_plugin_manager())
    return checks, {"host_root": str(saved), "kernel": host.release, "checks": [c.as_dict() for c in checks],
                    "status": "fail" if any(c.status == Status.FAIL for c in checks) else "ok"}


def _device_facts(saved: Path, recipe: Recipe) -> list[dict]:
    from lfspass.host.read import Host

    host, out = Host(saved), []
    for spec in recipe.devices:
        dev = host.devices.get(spec.address) if spec.address else next(iter(host.find_id(spec.id)), None)
        out.append({"device": dev.address if dev else None, "id": (dev.id if dev else None) or spec.id,
                    "group": dev.iommu_group if dev else None, "driver": dev.driver if dev else None})
    return out


def run_lab(recipe: Recipe, release: str, iommu: bool = True) -> dict:
    """Boot, save, judge; write verdict.json; raise LfspassError with doctor's findings on failure."""
    from lfspass.lab.qemu import boot, extract_host, grub_entry, lab_cmdline, qemu_argv

    t0 = time.monotonic()
    paths = lab_paths(recipe, iommu)
    cfg = recipe.root / recipe.boot.grub_cfg
    entry = grub_entry(cfg)
    kernel = recipe.root / entry.kernel.lstrip("/")
    if kernel != kernel_paths(recipe, release).vmlinuz:
        raise LfspassError(f"{cfg}: the newest lfspass entry boots {entry.kernel}, not the recipe's kernel "
                           f"{release}; run `doit grub`")
    if not kernel.is_file():
        raise LfspassError(f"{kernel} not found (named by {cfg}); run `doit kernel`")
    grub = None
    if recipe.boot.initrd:
        # [boot] initrd names where the initramfs goes: real GRUB boots the entry (FIELD-NOTES §9).
        from lfspass.lab.grublab import grub_boot

        grub = grub_boot(recipe, paths.dir, paths.dir / "boot.ext2", paths.initramfs, iommu, "boot")
        argv, cmdline, boot_s = grub.pop("qemu"), (grub["cmdline"] or "").split(), grub["boot_s"]
    else:
        cmdline = lab_cmdline(entry.params)
        argv = qemu_argv(kernel, paths.initramfs, cmdline, paths.guest_log, paths.host_out, iommu, recipe.lab.memory,
                         recipe.lab.accel)
        print(f"lab: booting {kernel.name} in QEMU ({'emulated VT-d' if iommu else 'NO IOMMU'}, edu 1234:11e8); "
              f"cmdline from {cfg.name}: {' '.join(cmdline)}", flush=True)
        boot_s = boot(argv, paths.guest_log, paths.host_out, recipe.lab.timeout)
    extract_host(paths.host_out, paths.saved, paths.guest_log)
    t1 = time.monotonic()
    checks, report = _doctor(paths.saved, recipe)
    devices = _device_facts(paths.saved, recipe)
    if report["kernel"] != release:
        raise LfspassError(f"the lab guest ran kernel {report['kernel']}, not {release}; see {paths.guest_log}")
    failed = [c for c in checks if c.status == Status.FAIL]
    iommu_check = next((c for c in checks if c.id == "iommu"), None)
    first = devices[0] if devices else {}
    verdict = {
        "ok": not failed, "recipe": str(recipe.path), "kernel": release, "vmlinuz": str(kernel),
        "cmdline": " ".join(cmdline), "emulated_iommu": iommu, "vfio": recipe.kernel.vfio,
        "iommu_enabled": bool(iommu_check and iommu_check.status == Status.PASS),
        "device": first.get("device"), "id": first.get("id"), "group": first.get("group"), "driver": first.get("driver"),
        "devices": devices, "doctor": report, "guest_log": str(paths.guest_log), "host_root": str(paths.saved),
        "timings": {"boot_s": round(boot_s, 2), "doctor_s": round(time.monotonic() - t1, 2),
                    "total_s": round(time.monotonic() - t0, 2)},
        "qemu": argv, "grub": grub,
    }
    write_atomic(paths.verdict, json.dumps(verdict, indent=2, sort_keys=True) + "\n")
    for c in checks:
        if c.status in (Status.WARN, Status.FAIL):
            print(f"lab: doctor {c.status.upper()} {c.id}: {c.detail}")
    if failed:
        raise LfspassError("lab failed: " + "; ".join(f"{c.id}: {c.detail}" for c in failed)
                           + f" (guest log {paths.guest_log}, verdict {paths.verdict})")
    print(f"lab: IOMMU enabled ({iommu_check.detail if iommu_check else '?'})")
    for d in devices:
        print(f"lab: device {d['device']} {d['id']} in IOMMU group {d['group']}, driver {d['driver']}")
    print(f"lab: PASS in {verdict['timings']['total_s']:.1f} s (guest boot {boot_s:.1f} s); "
          f"verdict {paths.verdict}, guest log {paths.guest_log}")
    return verdict


def _verdict_ok(path: Path):
    """uptodate check for ``lab=cached``: a passing verdict.json is reused (and shown)."""
    def check(task, values) -> bool:
        try:
            v = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(v, dict) or v.get("ok") is not True:
            return False
        print(f"lab: cached verdict ({path}): device {v.get('device')} {v.get('id')} in IOMMU group "
              f"{v.get('group')}, driver {v.get('driver')}; IOMMU enabled: {v.get('iommu_enabled')}")
        return True
    return check


def _not_a_lab(recipe) -> None:
    raise LfspassError(f"{recipe.path} is not a lab recipe ([lab] enabled = false); "
                       "run the lab with recipe=recipes/lab.toml, or use `lfspass doctor` on a real host")


def _files_under(path: Path) -> list[Path]:
    """``path`` itself when it is a file, the files below it when a folder, else nothing."""
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []


def lab_tasks(ctx) -> Iterator[dict]:
    """doit sub-tasks ``lab:initramfs`` and ``lab:boot`` for the context's recipe and kernel."""
    from doit.tools import config_changed

    from lfspass.lab.initramfs import BOOT_FILES, BUSYBOX, INIT_SCRIPT, build_initramfs
    from lfspass.tasks import fail, run_action
    from lfspass.boot.vfio import AUTOLOAD_FILES, MODPROBE_CONF

    recipe, release = ctx.recipe, ctx.release
    if not recipe.lab.enabled:
        # A real host's recipe: booting its kernel beside QEMU's edu would prove nothing.
        yield {"name": "boot", "doc": "(not a lab recipe)", "uptodate": [False],
               "actions": [(run_action, [_not_a_lab, recipe])]}
        return
    try:
        iommu, cached = lab_options(recipe)
        if recipe.lab.nested:
            # The nested lab's first boot only saves L1's host for `vm`: a passing one is kept
            # (so a second nested run only boots L1 with QEMU), and a VM device L1 does not
            # have fails here, before any guest boots.
            from lfspass.lab.precheck import precheck

            cached = True
            precheck(recipe)
    except LfspassError as exc:
        fail(exc)
    paths = lab_paths(recipe, iommu)
    # Every file the initramfs copies: lfspass's own (maybe not written yet) and any other
    # file in those folders, whose names also go into uptodate so a removed one counts.
    boot_files = sorted({recipe.root / MODPROBE_CONF, recipe.root / AUTOLOAD_FILES[recipe.host.init],
                         *(p for rel in BOOT_FILES for p in _files_under(recipe.root / rel))})
    yield {
        "name": "initramfs",
        "doc": "busybox initramfs with the installed kernel's modules and the root's modprobe.d / autoload files",
        "actions": [(run_action, [build_initramfs, recipe.root, release, paths.initramfs])],
        # A missing busybox is left to the action, which names the package to install.
        "file_dep": ctx.kernel_inputs() + [str(p) for p in boot_files] + [str(INIT_SCRIPT)]
                    + ([str(BUSYBOX)] if BUSYBOX.is_file() else []),
        "targets": [str(paths.initramfs)],
        "uptodate": [config_changed(json.dumps([release, str(recipe.root), list(map(str, boot_files))]))],
        "clean": True,
    }
    fingerprint = json.dumps([release, iommu, recipe.lab.timeout, recipe.lab.memory, recipe.lab.accel, str(recipe.root)])
    yield {
        "name": "boot",
        "doc": "boot the installed kernel in QEMU with the GRUB entry's parameters and check vfio-pci",
        "actions": [(run_action, [run_lab, recipe, release, iommu])],
        "file_dep": ctx.kernel_inputs() + [str(recipe.root / recipe.boot.grub_cfg), str(paths.initramfs)],
        "targets": [str(paths.verdict)],
        # A lab run is a measurement: it repeats every time unless the cached verdict is asked for.
        "uptodate": [config_changed(fingerprint), _verdict_ok(paths.verdict) if cached else False],
        "clean": True,
        "verbosity": 2,
    }
