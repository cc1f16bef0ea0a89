"""installer.source = "image": packages -> root folder -> GPT disk -> first boot -> moved into place once."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lfspass.diskspace import allocated, ensure_room
from lfspass.errors import LfspassError, VmError
from lfspass.fsutil import sha256_file, write_atomic
from lfspass.vm.children import Interrupted, Run, cleanup
from lfspass.vm.guest_disk import parse_size
from lfspass.vm.image.first_boot import first_boot
from lfspass.vm.image.packages import (CACHE_ENV, debs_size, host_mirror, host_suite, image_epoch, mmdebstrap_argv,
                                       package_versions, run_mmdebstrap, stamp)
from lfspass.vm.image.disk import Ids, assemble, grub_image, guest_esp, layout, make_root_fs, qcow2_size, to_qcow2
from lfspass.vm.image.root import clamp_times, customize, listing, remove_tree
from lfspass.vm.install import install_dir, marker_path
from lfspass.vm.plan import VmPlan

# What a build of minbase + kernel + systemd + openssh-server takes at its peak (the raw disk and
# its qcow2 side by side, about 0.7 GB each): checked before mmdebstrap starts, so a disk without
# it is refused up front; every later stage is checked again against its measured size.
IMAGE_ROOM = 2 << 30


def cache_dir(plan: VmPlan) -> Path:
    """$LFSPASS_APT_CACHE (tests share one), else apt-archives beside the VM folders."""
    return Path(os.environ.get(CACHE_ENV) or plan.dir.parent / "apt-archives")


def log_path(plan: VmPlan) -> Path:
    return plan.dir / "image-build.log"


def tree_path(plan: VmPlan) -> Path:
    return plan.dir / "image-tree.txt"


def build_tree(plan: VmPlan, work: Path, epoch: int, log, say, run: Run | None = None) -> tuple[Path, dict]:
    """mmdebstrap + lfspass's changes; returns the root folder and the facts for installed.json."""
    inst = plan.vm.installer
    suite = inst.suite or host_suite()
    # A bare host name means what it means for the installer: that host's /debian archive.
    mirror = (inst.mirror if "://" in inst.mirror else f"http://{inst.mirror}/debian") if inst.mirror else host_mirror(suite)
    cache = cache_dir(plan)
    cache.mkdir(parents=True, exist_ok=True)
    before = debs_size(cache)
    tree = work / "root"
    say(f"packages from {suite} at {mirror} ({(inst.mirror and 'installer.mirror') or 'the host apt sources'}), "
        f"apt cache {cache}")
    env = {"SOURCE_DATE_EPOCH": str(epoch)}
    run_mmdebstrap(mmdebstrap_argv(tree, suite, mirror, list(inst.packages), cache), tree, cache, env, log, say,
                   suite, mirror, run)
    t = time.monotonic()
    ids = Ids.for_vm(plan.name)
    customize(tree, name=plan.name, user=inst.user, ssh_key=inst.ssh_key, password_hash=inst.password_hash,
              ids=ids, log=log)
    clamp_times(tree, epoch)
    write_atomic(tree_path(plan), listing(tree), mode=0o600)
    packages = package_versions(tree)
    say(f"configuring: {len(packages)} packages installed, user {inst.user}, tree listing {tree_path(plan)}, "
        f"{time.monotonic() - t:.0f} s")
    return tree, {"suite": suite, "mirror": mirror, "downloaded_bytes": max(0, debs_size(cache) - before),
                  "packages": packages}


def _room(plan: VmPlan, folder: Path, need: int, what: str) -> None:
    ensure_room(folder, need, f"{plan.name}: {what}", VmError, "free space or set [vms] dir (and [vms.disk] path) "
                "on another filesystem")


def build_disk(plan: VmPlan, tree: Path, work: Path, out: Path, epoch: int, log, say) -> dict:
    """The raw GPT disk from ``tree``, then qcow2 at ``out``; returns both checksums.

    Each stage's output is measured against the free-space reserve before it is written:
    the root image about as big as the tree, the raw disk as its two partitions, the qcow2
    as ``qemu-img measure`` says.
    """
    t = time.monotonic()
    size = parse_size(plan.vm.disk.size, f"{plan.where}.disk.size")
    ids = Ids.for_vm(plan.name)
    efi, esp, root, raw = work / "BOOTX64.EFI", work / "esp.img", work / "root.img", work / "disk.raw"
    grub_image(efi, ids.root_fs, log)
    guest_esp(esp, efi, ids, epoch, log)
    _room(plan, work, allocated(tree) * 9 // 8, "the ext4 root image")
    fixed = make_root_fs(tree, root, layout(size)[3], ids, epoch, log)
    remove_tree(tree)   # the folder is in root.img now; free its space early
    _room(plan, work, allocated(root) + allocated(esp), "the raw disk")
    assemble(raw, size, esp, root, ids, log)
    root.unlink()
    raw_sha = sha256_file(raw)
    _room(plan, out.parent, qcow2_size(raw, log), "the qcow2 image")
    to_qcow2(raw, out, log)
    raw.unlink()
    os.chmod(out, 0o600)
    image_sha = sha256_file(out)
    say(f"assembling: GPT {plan.vm.disk.size} (ESP {esp.stat().st_size >> 20} MiB + ext4 root, {fixed} inode times "
        f"set to the timestamp), qcow2 {out.stat().st_size / 1e6:.0f} MB, sha256 {image_sha}, {time.monotonic() - t:.0f} s")
    return {"image_sha256": image_sha, "raw_sha256": raw_sha, "ids": ids.__dict__}


def build_image(plan: VmPlan, say=print) -> bool:
    """Build, check and place the disk; True when built now.  An existing disk is never touched."""
    disk, marker = plan.disk, marker_path(plan)
    cleanup(plan.dir, plan.name, say)   # what a killed run left (its temp disk counts against the room below)
    if disk.exists() or disk.is_symlink():
        say(f"{plan.name}: {disk} exists: left as it is, byte for byte (an image is built only where no disk is; "
            f"name a new [vms.disk] path to build again)")
        return False
    if getattr(plan.firmware, "bios", False):
        raise VmError(f"{plan.where}: installer.source = \"image\" builds a UEFI disk (GRUB on an EFI system "
                      "partition): keep the VM on OVMF (firmware.type = \"ovmf\")")
    epoch, origin = image_epoch(plan.recipe.kernel.timestamp)
    _room(plan, plan.dir, IMAGE_ROOM, "an image guest build")
    plan.dir.mkdir(parents=True, exist_ok=True)
    disk.parent.mkdir(parents=True, exist_ok=True)
    work = plan.dir / ".image-build"
    remove_tree(work)   # what a killed run left
    tmp = disk.with_name(f".{disk.name}.{os.getpid()}.tmp")
    logfile = log_path(plan)
    started = time.monotonic()
    try:
        # The Run stops mmdebstrap and QEMU, and removes the temp disk and the work folder, on every
        # way out; after a SIGKILL the next run does (SIGTERM, SIGINT, SIGHUP raise Interrupted).
        with Run(plan.dir, plan.name, say) as run, open(logfile, "w") as log:
            run.temp(work).mkdir()
            run.temp(tmp)
            os.chmod(logfile, 0o600)   # VM files are the owner's only, as the installer's are
            def step(text: str) -> None:
                say(f"{plan.name}: {text}")
                log.write(f"# {text}\n")
                log.flush()

            step(f"building an image guest, timestamp {stamp(epoch)} from {origin}; full log {logfile}")
            tree, facts = build_tree(plan, work, epoch, log, step, run)
            facts.update(build_disk(plan, tree, work, tmp, epoch, log, step))
            remove_tree(work)
            boot = first_boot(plan, tmp, install_dir(plan), plan.vm.installer.timeout * 60, step, run)
            # link + unlink places the disk without ever replacing one made meanwhile.
            try:
                os.link(tmp, disk)
            except FileExistsError:
                step(f"{disk} appeared while building: left as it is; the new image was dropped")
                return False
            total = time.monotonic() - started
            write_atomic(marker, json.dumps({
                "vm": plan.name, "source": "image", "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "disk": str(disk), "timestamp": epoch, "timestamp_from": origin, "build_seconds": round(total, 1),
                "build_log": str(logfile), "tree_listing": str(tree_path(plan)), **facts, **boot}, indent=1) + "\n",
                mode=0o600)
            step(f"installed in {total:.0f} s: {disk} (sha256 {facts['image_sha256']}); {marker}")
    except (LfspassError, OSError) as exc:
        if isinstance(exc, Interrupted):
            exc = VmError(f"{plan.name}: image build {exc}: its programs were stopped and its temp files removed, "
                          f"nothing is at {disk}; run `doit vm` again to start over", exit_code=128 + exc.signum)
        elif isinstance(exc, OSError):
            full = " (the disk is full)" if exc.errno == 28 else ""
            exc = VmError(f"{plan.name}: image build failed{full}: {exc}; full log: {logfile}")
        try:   # the log ends with the same line the user sees
            with open(logfile, "a") as log:
                log.write(f"error: {exc.one_line()}\n")
        except OSError:
            pass
        raise exc from None
    return True
