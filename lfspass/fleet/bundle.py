"""The kernel bundle: one tar holding an installed kernel and what it was made from, named by its digest.

Layout of ``lfspass-<release>-<sha256>.tar`` (plain tar, members in this order)::

    lfspass-bundle.json        what is inside: every member's sha256 and size, the release, the
                               config's sha256, the module signing certificate's fingerprint, the
                               Kconfig decisions and upgrade report, the recipe's boot and devices
    kernel/vmlinuz             the bzImage                  (installed as boot/vmlinuz-<rel>-lfs-<v>)
    kernel/System.map
    kernel/config              the final .config            (boot/config-<rel>)
    modules/...                lib/modules/<rel>/ as modules_install (and external modules) left it

The ``<sha256>`` in the name is the digest of ``lfspass-bundle.json``, which holds every other
member's digest: the name pins every byte that is installed.  The tar is deterministic (sorted
members, owner 0, mtime 0, fixed modes), so the same installed kernel gives the same file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from lfspass import __version__
from lfspass.diskspace import ensure_room
from lfspass.errors import InputError
from lfspass.kernel.build import BuildLayout
from lfspass.kernel.config_guard import REPORT
from lfspass.kernel.install import complete_manifest
from lfspass.plan import kernel_paths
from lfspass.recipe import Recipe

FORMAT = "lfspass-bundle/1"
META = "lfspass-bundle.json"
KERNEL_FILES = ("kernel/vmlinuz", "kernel/System.map", "kernel/config")
NAME_RE = re.compile(r"lfspass-(?P<release>[A-Za-z0-9._+-]+)-(?P<digest>[0-9a-f]{64})\.tar")
MEMBER_RE = re.compile(r"(kernel/(vmlinuz|System\.map|config)|modules/[A-Za-z0-9._+,@=~-]+(/[A-Za-z0-9._+,@=~-]+)*)")
# modules_install's links to the build machine's tree: meaningless on another host.
SKIPPED_LINKS = ("build", "source")


def bundle_name(release: str, digest: str) -> str:
    return f"lfspass-{release}-{digest}.tar"


def safe_member(name: str) -> bool:
    """A member name lfspass writes and accepts: kernel/<file> or modules/<path>, no '..', no '/' at either end."""
    return bool(MEMBER_RE.fullmatch(name)) and ".." not in name.split("/") and "." not in name.split("/")


def _members(recipe: Recipe, release: str) -> tuple[dict, list[tuple[str, Path, str]]]:
    """The installed release's manifest and its (member name, installed file, sha256) list.  The
    manifest's hashes were just checked against the files (complete_manifest): not computed again."""
    paths = kernel_paths(recipe, release)
    manifest = complete_manifest(recipe.root, paths.manifest)
    if manifest is None:
        raise InputError(f"{paths.manifest}: no complete installed kernel {release} under {recipe.root} "
                         "(missing, or a file it lists changed); run `doit kernel` first, then bundle it")
    files = manifest["files"]
    out = [(name, src, files[str(src.relative_to(recipe.root))]) for name, src in
           (("kernel/vmlinuz", paths.vmlinuz), ("kernel/System.map", paths.system_map), ("kernel/config", paths.config))]
    mods = str(paths.modules_dir.relative_to(recipe.root)) + "/"
    for rel, want in manifest["files"].items():
        if not rel.startswith(mods):
            continue
        inner = rel[len(mods):]
        if isinstance(want, dict):
            if inner in SKIPPED_LINKS:
                continue
            raise InputError(f"{recipe.root / rel}: a link in the module tree; a bundle carries files only")
        name = f"modules/{inner}"
        if not safe_member(name):
            raise InputError(f"{recipe.root / rel}: a name a bundle cannot carry; rename it")
        out.append((name, recipe.root / rel, want))
    return manifest, out


def _kconfig(recipe: Recipe) -> dict:
    layout = BuildLayout(Path(recipe.kernel.build_dir))
    out: dict = {}
    for key, path in (("decisions", layout.config_result), ("upgrade_report", layout.build_dir / REPORT)):
        try:
            out[key] = json.loads(path.read_text())
        except (OSError, ValueError):
            out[key] = None
    return out


def _info(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = size, mode, 0, 0, 0, "", ""
    return info


def write_bundle(recipe: Recipe, release: str, out_dir: Path) -> dict:
    """Pack the installed ``release`` into ``out_dir``; return {path, digest, release, files, bytes}."""
    manifest, members = _members(recipe, release)
    files: dict[str, dict[str, Any]] = {name: {"sha256": sha, "size": src.stat().st_size}
                                       for name, src, sha in members}
    build = {k: v for k, v in manifest.items() if k != "files"}
    meta = {
        "format": FORMAT, "lfspass": __version__, "release": release,
        "config_sha256": files["kernel/config"]["sha256"],
        # The signing certificate's sha256 fingerprint (as `openssl x509 -fingerprint -sha256` prints it).
        "module_signing_cert_sha256": (build.get("module_signing") or {}).get("sha256_fingerprint") or None,
        "kconfig": _kconfig(recipe),
        "recipe": {"name": recipe.path.name, "boot": dataclasses.asdict(recipe.boot),
                   "devices": [dataclasses.asdict(d) for d in recipe.devices]},
        "build": build, "files": files,
    }
    raw = (json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n").encode()
    digest = hashlib.sha256(raw).hexdigest()
    total = len(raw) + sum(f["size"] for f in files.values()) + 1024 * (len(files) + 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / bundle_name(release, digest)
    ensure_room(out_dir, total, f"bundle {final}", InputError, "free space or pass --out to another folder")
    tmp = final.with_name(f".{final.name}.part")
    try:
        with open(tmp, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(META, len(raw)), io.BytesIO(raw))
                for name, src, _sha in members:
                    with open(src, "rb") as data:
                        tar.addfile(_info(name, files[name]["size"]), data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(final), "digest": digest, "release": release, "files": len(files),
            "bytes": final.stat().st_size}
