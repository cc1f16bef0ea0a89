"""Kernel install under the recipe root (LFS names), atomically, plus the JSON manifest."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from lfspass.errors import BuildError
from lfspass.fsutil import copy_atomic, require_tool, sha256_file, write_atomic
from lfspass.kernel.build import BuildLayout, make_command, run_make
from lfspass.plan import KernelPaths


def config_has(config: Path, symbol: str, value: str = "y") -> bool:
    """True when ``CONFIG_<symbol>=<value>`` is in a .config file."""
    return f"CONFIG_{symbol}={value}\n" in config.read_text()


def _swap_dir(staged: Path, dest: Path) -> None:
    """Put ``staged`` at ``dest``: rename the old one aside, the new one in, then drop the old.

    Both renames stay on one filesystem (``staged`` is made beside ``dest``), so a
    reader sees the old folder or the new one; a crash between them leaves the old
    folder under a dot-name next to it, never a half-filled one at ``dest``.
    """
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / "x")
    os.rename(staged, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _stage_modules(root: Path, tree: Path, layout: BuildLayout, release: str, jobs: int,
                   env: dict[str, str], make_vars: list[str], staging: Path) -> Path:
    """``make modules_install`` into ``staging``; return the staged ``lib/modules/<rel>``."""
    staged = staging / "lib" / "modules" / release
    if config_has(layout.config, "MODULES"):
        depmod = shutil.which("depmod") or "/sbin/depmod"
        if not Path(depmod).exists():
            require_tool("depmod", "kmod")
        run_make(make_command(tree, layout.build_dir, jobs, make_vars, "modules_install",
                              f"INSTALL_MOD_PATH={staging}", "INSTALL_MOD_STRIP=1", f"DEPMOD={depmod}"),
                 env, layout.log)
    staged.mkdir(parents=True, exist_ok=True)
    # modules_install links build/ and source/ to this machine's build folders: right for
    # an install into / (out-of-tree modules find the headers), dangling in another root
    # (an LFS partition, the lab), where they would also tie the manifest to local paths.
    if root.resolve() != Path("/"):
        for link in ("build", "source"):
            if (staged / link).is_symlink():
                (staged / link).unlink()
    # grub/vfio read these two to learn what the kernel ships; a kernel without
    # loadable modules still gets them (empty modules.dep, its built-in list).
    if not (staged / "modules.builtin").exists():
        src = layout.obj / "modules.builtin"
        if src.exists():
            shutil.copyfile(src, staged / "modules.builtin")
        else:
            (staged / "modules.builtin").write_text("")
    if not (staged / "modules.dep").exists():
        (staged / "modules.dep").write_text("")
    return staged


def installed_files(root: Path, paths: list[Path]) -> dict[str, object]:
    """root-relative path -> sha256 (files) or {"link": target} (symlinks), for the manifest."""
    out: dict[str, object] = {}

    def add(p: Path) -> None:
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = {"link": os.readlink(p)}
        elif p.is_file():
            out[rel] = sha256_file(p)

    for top in paths:
        if top.is_dir() and not top.is_symlink():
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
                    add(Path(dirpath) / name)
        else:
            add(top)
    return dict(sorted(out.items()))


def install_kernel(root: Path, paths: KernelPaths, release: str, tree: Path, layout: BuildLayout, *,
                   jobs: int, env: dict[str, str], make_vars: list[str], docs: bool,
                   inputs: dict) -> dict:
    """Install one built release under ``root``; other releases there are left alone.

    Files are copied to a temp name and renamed; modules (and docs) are staged in a
    dot-folder beside their destination and renamed into place.  The manifest is
    written last: it is the marker that the install finished (grub/vfio depend on it).
    """
    for need in (layout.bzimage, layout.system_map, layout.config):
        if not need.is_file():
            raise BuildError(f"{need} is missing: the kernel build did not finish; run `doit kernel` again "
                             f"(log: {layout.log})")
    moddir = paths.modules_dir
    moddir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.lfspass-", dir=moddir.parent))
    try:
        staged = _stage_modules(root, tree, layout, release, jobs, env, make_vars, staging)
        doc_dir = root / "usr" / "share" / "doc" / f"linux-{release}"
        staged_doc = None
        if docs:
            doc_dir.parent.mkdir(parents=True, exist_ok=True)
            staged_doc = Path(tempfile.mkdtemp(prefix=f".{doc_dir.name}.lfspass-", dir=doc_dir.parent)) / "d"
            shutil.copytree(tree / "Documentation", staged_doc, symlinks=True)
        # The manifest goes first, so that a half-done install is never taken for a done one.
        paths.manifest.unlink(missing_ok=True)
        copy_atomic(layout.bzimage, paths.vmlinuz, mode=0o644)
        copy_atomic(layout.system_map, paths.system_map, mode=0o644)
        copy_atomic(layout.config, paths.config, mode=0o644)
        _swap_dir(staged, moddir)
        if staged_doc is not None:
            _swap_dir(staged_doc, doc_dir)
            shutil.rmtree(staged_doc.parent, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tops = [paths.vmlinuz, paths.system_map, paths.config, moddir] + ([doc_dir] if docs else [])
    manifest = dict(inputs, release=release, files=installed_files(root, tops))
    write_atomic(paths.manifest, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
