"""Kernel install under the recipe root (LFS names), atomically, plus the JSON manifest."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from lfspass import journal
from lfspass.errors import BuildError
from lfspass.fsutil import require_tool, sha256_file
from lfspass.kernel.build import BuildLayout, make_command, run_make
from lfspass.model import config_values
from lfspass.plan import KernelPaths


def config_has(config: Path, symbol: str, value: str = "y") -> bool:
    """True when ``CONFIG_<symbol>=<value>`` is in a .config file."""
    return config_values(config.read_text()).get(symbol) == value


def depmod_tool() -> str:
    """The depmod kbuild's modules_install runs (DEPMOD=): on PATH, else /sbin/depmod; missing: kmod."""
    depmod = shutil.which("depmod") or "/sbin/depmod"
    if not Path(depmod).exists():
        require_tool("depmod", "kmod")
    return depmod


def _stage_modules(root: Path, tree: Path, layout: BuildLayout, release: str, jobs: int,
                   env: dict[str, str], make_vars: list[str], staging: Path) -> Path:
    """``make modules_install`` into ``staging``; return the staged ``lib/modules/<rel>``."""
    staged = staging / "lib" / "modules" / release
    if config_has(layout.config, "MODULES"):
        depmod = depmod_tool()
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


def kept_paths(paths: KernelPaths) -> KernelPaths:
    """Where the previous build of the same release is kept when a reinstall replaces it."""
    return KernelPaths(vmlinuz=paths.vmlinuz.with_name(paths.vmlinuz.name + ".old"),
                       system_map=paths.system_map.with_name(paths.system_map.name + ".old"),
                       config=paths.config.with_name(paths.config.name + ".old"),
                       modules_dir=paths.modules_dir.with_name(paths.modules_dir.name + ".old"),
                       manifest=paths.manifest.with_name(paths.manifest.name[:-len(".json")] + ".old.json"))


def complete_manifest(root: Path, manifest: Path) -> dict | None:
    """The manifest when every file it lists is there with its sha256 (a complete kernel), else None."""
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not any(rel.endswith("/modules.dep") for rel in files):
        return None
    for rel, want in files.items():
        p = root / rel
        if isinstance(want, dict):
            if not p.is_symlink() or os.readlink(p) != want.get("link"):
                return None
        elif not p.is_file() or p.is_symlink() or sha256_file(p) != want:
            return None
    return data


def _kept_name(rel: str, release: str) -> str:
    mods = f"lib/modules/{release}/"
    return f"lib/modules/{release}.old/{rel[len(mods):]}" if rel.startswith(mods) else rel + ".old"


def _keep_previous(root: Path, paths: KernelPaths, release: str, old: dict) -> KernelPaths:
    """Copy the complete installed build aside (hard links), manifest last; every step journaled.

    The kept manifest goes first, so a kept set cut off half-way is never taken for a
    complete one; the installed build is untouched while this runs.
    """
    kept = kept_paths(paths)
    journal.remove(root, kept.manifest)
    for rel in old["files"]:
        if rel.startswith((f"lib/modules/{release}/", "usr/")):
            continue
        src, dst = root / rel, root / _kept_name(rel, release)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent)) / "x"
        journal.link_tree(src, tmp) if src.is_dir() else os.link(src, tmp)
        with journal.editing(root, dst):
            os.replace(tmp, dst)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{kept.modules_dir.name}.", dir=paths.modules_dir.parent)) / "x"
    journal.link_tree(paths.modules_dir, staged)
    journal.replace_dir(root, staged, kept.modules_dir)
    shutil.rmtree(staged.parent, ignore_errors=True)
    files = {_kept_name(rel, release): v for rel, v in old["files"].items() if not rel.startswith("usr/")}
    data = dict(old, files=dict(sorted(files.items())), kept_from=str(paths.manifest.name))
    journal.write_atomic(root, kept.manifest, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return kept


def _replaces(old: dict, new: dict[str, object], release: str) -> bool:
    """True when installing ``new`` overwrites or drops a file of the complete ``old`` build."""
    of = old["files"]
    if any(rel in of and of[rel] != v for rel, v in new.items()):
        return True
    mods = f"lib/modules/{release}/"
    return any(rel.startswith(mods) and rel not in new for rel in of)


def running_release(root: Path) -> str | None:
    """The release this machine runs, when ``root`` is its own /."""
    return os.uname().release if root.resolve() == Path("/") else None


def install_kernel(root: Path, paths: KernelPaths, release: str, tree: Path, layout: BuildLayout, *,
                   jobs: int, env: dict[str, str], make_vars: list[str], docs: bool,
                   inputs: dict, running: str | None = None,
                   stage_extra: Callable[[Path, Path], dict] | None = None) -> dict:
    """Install one built release under ``root``; other releases there are left alone.

    ``make modules_install`` stages the module tree beside its destination; ``stage_extra(staging,
    staged)`` adds to it before anything is compared or moved (the external modules under updates/)
    and returns what it adds to the manifest; install_staged does the rest.
    """
    for need in (layout.bzimage, layout.system_map, layout.config):
        if not need.is_file():
            raise BuildError(f"{need} is missing: the kernel build did not finish; run `doit kernel` again "
                             f"(log: {layout.log})")
    paths.modules_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.lfspass-", dir=paths.modules_dir.parent))
    try:
        staged = _stage_modules(root, tree, layout, release, jobs, env, make_vars, staging)
        extra = stage_extra(staging, staged) if stage_extra is not None else {}
        manifest, _changed = install_staged(root, paths, release, (layout.bzimage, layout.system_map, layout.config),
                                            staged, inputs=dict(inputs, **extra), running=running,
                                            docs_from=tree / "Documentation" if docs else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def install_staged(root: Path, paths: KernelPaths, release: str, kernel: tuple[Path, Path, Path], staged: Path, *,
                   inputs: dict, running: str | None = None, docs_from: Path | None = None) -> tuple[dict, bool]:
    """Install ``kernel`` (bzImage, System.map, .config) and the module tree ``staged`` (a folder
    beside ``paths.modules_dir``, moved into place) under ``root``; return the manifest and whether
    anything changed.

    Reinstalling a release whose files differ first keeps the complete previous build
    under ``.old`` names (vmlinuz, System.map, config, lib/modules/<rel>.old and its own
    manifest), so at every instant one complete kernel is on disk.  Files are copied to
    a temp name and renamed; the module tree is exchanged in one step.  The manifest is
    written last: it marks the install finished.  Every change is journaled for
    `lfspass rollback`.  The same files again change nothing.
    """
    moddir = paths.modules_dir
    bzimage, system_map, config = kernel
    old = complete_manifest(root, paths.manifest)
    new: dict[str, object] = {str(p.relative_to(root)): sha256_file(src) for p, src in
                              ((paths.vmlinuz, bzimage), (paths.system_map, system_map), (paths.config, config))}
    new.update({str(moddir.relative_to(root) / k): v for k, v in installed_files(staged, [staged]).items()})
    replaces = old is None or _replaces(old, new, release)
    if old is not None and replaces:
        kept = _keep_previous(root, paths, release, old)
        print(f"kernel install: the previous build of {release} is kept as {kept.vmlinuz} and {kept.modules_dir}")
        if release == (running if running is not None else running_release(root)):
            print(f"warning: replacing the files of the running kernel {release}; the running build is kept "
                  f"as {kept.vmlinuz} (GRUB entry '(previous build)'); boot the new one with `lfspass boot try`",
                  file=sys.stderr)
    doc_dir = root / "usr" / "share" / "doc" / f"linux-{release}"
    staged_doc = None
    try:
        if docs_from is not None:
            doc_dir.parent.mkdir(parents=True, exist_ok=True)
            staged_doc = Path(tempfile.mkdtemp(prefix=f".{doc_dir.name}.lfspass-", dir=doc_dir.parent)) / "d"
            shutil.copytree(docs_from, staged_doc, symlinks=True)
        # The manifest goes first, so that a half-done install is never taken for a done one
        # (a complete build that only gains files keeps its manifest: it stays true).
        if replaces:
            journal.remove(root, paths.manifest)
        changed = replaces
        for src, dst in ((bzimage, paths.vmlinuz), (system_map, paths.system_map), (config, paths.config)):
            changed = journal.copy_atomic(root, src, dst, mode=0o644) or changed
        if not moddir.is_dir() or journal.tree_listing(moddir) != journal.tree_listing(staged):
            journal.replace_dir(root, staged, moddir)
            changed = True
        if staged_doc is not None:
            journal.replace_dir(root, staged_doc, doc_dir)
    finally:
        if staged_doc is not None:
            shutil.rmtree(staged_doc.parent, ignore_errors=True)
    tops = [paths.vmlinuz, paths.system_map, paths.config, moddir] + ([doc_dir] if docs_from is not None else [])
    manifest = dict(inputs, release=release, files=installed_files(root, tops))
    changed = journal.write_atomic(root, paths.manifest, json.dumps(manifest, indent=1, sort_keys=True) + "\n") or changed
    return manifest, changed
