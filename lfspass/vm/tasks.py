"""doit sub-tasks per VM: fetch, firmware, disk, install (when asked) and launcher."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Iterator

from lfspass.vm.preflight import preflight
from lfspass.vm.guest_disk import ensure_disk, private_dir
from lfspass.errors import LfspassError
from lfspass.fetch.item import Download
from lfspass.vm.firmware import download_targets, prepare_vars
from lfspass.vm.install import REINSTALL_ENV, interactive_boot, iso_path, marker_path, run_install
from lfspass.vm.image.build import build_image
from lfspass.vm.libvirt_access import grant
from lfspass.vm.launcher import domain_xml, launcher_paths, script_text, write_launchers
from lfspass.vm.qemu_argv import build_argv
from lfspass.recipe import Recipe
from lfspass.render import TEMPLATES
from lfspass.tasks import Context, run_action
from lfspass.vm.plan import VmPlan, build_vm_plan


# The sources that boot Debian's installer (and so get an NAME-install.sh); "image" builds the disk instead.
INSTALLERS = ("netboot", "iso")


def _raise(exc: LfspassError) -> None:
    raise exc


def _plan(recipe: Recipe, name: str) -> VmPlan:
    return build_vm_plan(recipe, next(v for v in recipe.vms if v.name == name))


def downloads(plan: VmPlan) -> list[Download]:
    """Every file the VM downloads: url, verification and destination."""
    fw = plan.vm.firmware
    out = [Download(url, dest, sha256=sha, max_size=getattr(fw, f"{part}_max_size"),
                    max_size_key=f"{plan.where}.firmware.{part}_max_size =")
           for part, (url, sha, dest) in download_targets(fw, plan.dir).items()]
    inst = plan.vm.installer
    iso = iso_path(plan)
    if iso is not None and not inst.iso:
        out.append(Download(inst.iso_url, iso, sha256=inst.iso_sha256 or None, sums_url=inst.sums_url or None,
                            signature_url=inst.signature_url or None,
                            keyring=Path(inst.keyring) if inst.keyring else None, max_size=inst.iso_max_size,
                            max_size_key=f"{plan.where}.installer.iso_max_size ="))
    return out


def _fetch(recipe: Recipe, name: str) -> None:
    from lfspass.fetch.download import fetch_item

    plan = _plan(recipe, name)
    private_dir(plan.dir)
    for item in downloads(plan):
        result = fetch_item(item)
        how = "from the cache" if result.from_cache else f"{result.downloaded_bytes} bytes downloaded"
        print(f"{result.path}: sha256 {result.sha256} verified ({how})")


def _still_verified(items: list[Download]) -> bool:
    from lfspass.fetch.download import still_verified

    return all(still_verified(i.dest, i.sha256) for i in items)


def _firmware(recipe: Recipe, name: str) -> None:
    fw = _plan(recipe, name).firmware
    if fw.bios:
        prepare_vars(fw)  # checks the file is there
        print(f"{name}: SeaBIOS ({fw.code}), no UEFI variables to keep")
        return
    print(f"{fw.vars}: {'made from ' + str(fw.vars_template) if prepare_vars(fw) else 'kept (holds the UEFI variables)'}")


def _outside_root(plan) -> None:
    """Name the VM's folder and disk when they lie outside [host] root: only a path the recipe
    spells out can (the defaults are below the root), and the run says where it writes."""
    root = plan.recipe.root.resolve()
    for key, path in ((f"{plan.where}.dir", plan.dir), (f"{plan.where}.disk.path", plan.disk)):
        if not path.resolve().is_relative_to(root):
            print(f"{path}: outside the install root {root}, as {key} says")


def _disk(recipe: Recipe, name: str) -> None:
    plan = _plan(recipe, name)
    _outside_root(plan)
    private_dir(plan.dir)
    made = ensure_disk(plan.disk, plan.vm.disk.size, f"{plan.where}.disk.size", plan.vm.disk.preallocation)
    print(f"{plan.disk}: {'created, ' + plan.vm.disk.size if made else 'kept as it is'}")


def _install(recipe: Recipe, name: str) -> None:
    run_install(_plan(recipe, name))


def _build_image(recipe: Recipe, name: str) -> None:
    plan = _plan(recipe, name)
    private_dir(plan.dir)
    build_image(plan)


def _launchers(recipe: Recipe, name: str) -> None:
    plan = _plan(recipe, name)
    private_dir(plan.dir)
    if plan.vm.libvirt:
        for line in grant(plan.dir, f"{plan.where}.libvirt"):
            print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)
    boot = interactive_boot(plan) if plan.vm.installer.source in INSTALLERS else None
    for path in write_launchers(plan, boot):
        print(f"{'wrote' if path.exists() else 'removed (the recipe has no installer now)'} {path}")


def _rendered(plan: VmPlan) -> str:
    """What the launchers will contain: their config_changed value covers recipe, plugins and sysfs."""
    paths = launcher_paths(plan)
    text = script_text(plan, build_argv(plan)) + domain_xml(plan, paths["xml"])
    if plan.vm.installer.source in INSTALLERS:
        text += script_text(plan, build_argv(plan, interactive_boot(plan)))
    return text


def vm_tasks(ctx: Context) -> Iterator[dict]:
    from doit.tools import config_changed

    recipe = ctx.recipe
    installs = []
    # Every VM is planned and checked against its existing files before any task writes:
    # one bad VM must not leave another's VARS or disk half made.
    planned, failure = [], None
    for vm in recipe.vms:
        try:
            plan = build_vm_plan(recipe, vm)
            preflight(plan)
            planned.append((vm, plan, _rendered(plan)))
        except LfspassError as exc:
            failure = failure or exc
    if failure is not None:
        # Only the VM tasks fail (one `error:` line when run); grub, vfio and kernel of the
        # same recipe must still load.
        for vm in recipe.vms:
            yield {"name": f"launcher:{vm.name}", "actions": [(run_action, [_raise, failure])], "verbosity": 2,
                   "doc": f"{vm.name}: cannot be planned ({failure.one_line()})"}
        return
    for vm, plan, rendered in planned:
        n = vm.name
        args = [recipe, n]
        items = downloads(plan)
        pre = []
        if items:
            pre.append(f"vm:fetch:{n}")
            yield {"name": f"fetch:{n}", "actions": [(run_action, [_fetch, *args])],
                   "targets": [str(i.dest) for i in items],
                   # Re-checked every run: a target changed since it verified (size, mtime, inode)
                   # is hashed again (and fetched again when it no longer matches).
                   "uptodate": [config_changed(repr([(i.url, i.sha256, i.sums_url) for i in items])),
                                lambda items=items: _still_verified(items)],
                   "clean": [], "verbosity": 2, "doc": "download and verify firmware and installer media"}
        fw = plan.firmware
        fetched = {str(i.dest) for i in items}
        fw_deps = [str(p) for p in (fw.code, fw.vars_template) if p.exists() or str(p) in fetched]
        yield {"name": f"firmware:{n}", "actions": [(run_action, [_firmware, *args])],
               "file_dep": fw_deps, "task_dep": pre, "targets": [] if fw.bios else [str(fw.vars)],
               "uptodate": [config_changed(repr(vm.firmware))], "clean": [], "verbosity": 2,
               "doc": "the VM's own copy of OVMF VARS (made once, then kept)"}
        if vm.installer.source == "image":
            # No empty disk first: the image is built beside the disk path and moved there only
            # when that path is still free.  Runs until a built disk and its installed.json exist.
            marker = marker_path(plan)
            installs.append(f"vm:install:{n}")
            yield {"name": f"install:{n}", "actions": [(run_action, [_build_image, *args])],
                   "task_dep": [*pre, f"vm:firmware:{n}"], "targets": [str(marker)],
                   "uptodate": [lambda marker=marker, disk=plan.disk: marker.exists() and disk.exists()],
                   "clean": [], "verbosity": 2, "doc": "build the disk from Debian packages (mmdebstrap), boot it once"}
        else:
            yield {"name": f"disk:{n}", "actions": [(run_action, [_disk, *args])], "targets": [str(plan.disk)],
                   "uptodate": [config_changed(f"{plan.disk} {vm.disk.size}")], "clean": [], "verbosity": 2,
                   "doc": "the qcow2 disk (made once, never resized or overwritten)"}
        if vm.installer.source in INSTALLERS and vm.installer.unattended:
            marker = marker_path(plan)
            installs.append(f"vm:install:{n}")
            # Runs once: the marker, not the media, decides (a changed netboot package must
            # not wipe an installed guest).  LFSPASS_REINSTALL=1 asks again.
            yield {"name": f"install:{n}", "actions": [(run_action, [_install, *args])],
                   "task_dep": [*pre, f"vm:firmware:{n}", f"vm:disk:{n}"], "targets": [str(marker)],
                   "uptodate": [lambda marker=marker: marker.exists() and not os.environ.get(REINSTALL_ENV)],
                   "clean": [], "verbosity": 2, "doc": f"unattended install (once; {REINSTALL_ENV}=1 again)"}
        paths = launcher_paths(plan)
        yield {"name": f"launcher:{n}", "actions": [(run_action, [_launchers, *args])],
               "file_dep": [str(TEMPLATES / "domain.xml.j2")], "targets": [str(p) for p in paths.values()],
               "uptodate": [config_changed(rendered)], "clean": [], "verbosity": 2,
               "doc": f"{n}.sh and {n}.xml (libvirt) launchers"}
    if installs:
        yield {"name": "install", "actions": None, "task_dep": installs, "doc": "unattended installs of every VM"}
