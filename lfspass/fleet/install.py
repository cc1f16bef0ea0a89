"""`lfspass install --bundle`: a verified bundle installed as `kernel:install` installs a build, then
the host's GRUB block and vfio files written from the bundle's final config and this host's recipe."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lfspass import journal
from lfspass.boot.grub import write_grub
from lfspass.boot.vfio import write_vfio
from lfspass.diskspace import ensure_room
from lfspass.errors import InputError
from lfspass.fleet.verify import Bundle, extract, verify
from lfspass.kernel.install import install_staged
from lfspass.plan import build_plan, kernel_paths
from lfspass.recipe import Recipe


def _install_kernel(recipe: Recipe, bundle: Bundle) -> bool:
    root, release = recipe.root, bundle.release
    paths = kernel_paths(recipe, release)
    paths.modules_dir.parent.mkdir(parents=True, exist_ok=True)
    paths.vmlinuz.parent.mkdir(parents=True, exist_ok=True)
    # Staged beside lib/modules (the module tree moves in with one rename), plus a kept previous
    # build of the same release: hard links, so the bundle's size twice is ample.
    ensure_room(paths.modules_dir.parent, 2 * bundle.size, f"installing {bundle.path.name}", InputError)
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.bundle-", dir=paths.modules_dir.parent))
    try:
        extract(bundle, staging)
        inputs = dict(bundle.meta["build"], bundle={"name": bundle.path.name, "digest": bundle.digest})
        kernel = (staging / "kernel" / "vmlinuz", staging / "kernel" / "System.map", staging / "kernel" / "config")
        _manifest, changed = install_staged(root, paths, release, kernel, staging / "modules", inputs=inputs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return changed


def install_bundle(recipe: Recipe, path: Path) -> dict:
    """Verify ``path`` (nothing written when it fails), install it under the recipe's root, write grub
    and vfio; every host edit is journaled in one run (`lfspass rollback` undoes it)."""
    bundle = verify(path)
    release = bundle.release
    with journal.run(recipe.root, f"install --bundle {path.name}"):
        kernel_changed = _install_kernel(recipe, bundle)
        plan = build_plan(recipe, release)   # the installed config decides the modules and parameters
        grub_changed = write_grub(plan)
        vfio_changed = write_vfio(plan)
    paths = kernel_paths(recipe, release)
    return {"bundle": path.name, "digest": bundle.digest, "release": release,
            "changed": bool(kernel_changed or grub_changed or vfio_changed),
            "kernel": {"changed": kernel_changed, "vmlinuz": str(paths.vmlinuz), "manifest": str(paths.manifest)},
            "grub": {"changed": grub_changed}, "vfio": {"changed": [str(p) for p in vfio_changed]}}
