"""Read a kernel bundle without trusting it: its name's digest, every member's sha256 and size,
nothing else inside.  ``verify`` only reads; ``extract`` writes into a staging folder and checks
every byte again as it writes (the file could change between the two reads)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lfspass.errors import CheckFailed, InputError
from lfspass.fleet.bundle import FORMAT, KERNEL_FILES, META, NAME_RE, safe_member

META_MAX = 64 << 20   # the description of a kernel is small; a bigger first member is not a bundle
CHUNK = 1 << 20


class BundleError(CheckFailed):
    """A bundle that is not what its name says (tampered, truncated, renamed, foreign)."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    digest: str
    meta: dict

    @property
    def release(self) -> str:
        return self.meta["release"]

    @property
    def files(self) -> dict[str, dict]:
        return self.meta["files"]

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r|")   # a stream: members in order, each read once, no seeking
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{path}: not a readable bundle ({exc}); copy it again from where it was built") from None


def _meta(path: Path, tar: tarfile.TarFile, digest: str) -> dict:
    first = tar.next()
    if first is None or first.name != META or not first.isreg() or first.size > META_MAX:
        raise BundleError(f"{path}: its first member is not {META}; not a lfspass bundle")
    fh = tar.extractfile(first)
    raw = fh.read() if fh is not None else b""
    if hashlib.sha256(raw).hexdigest() != digest:
        raise BundleError(f"{path}: {META} does not match the digest in the bundle's name (changed after it was "
                          "built); not installed: copy the bundle again from where it was built")
    try:
        meta = json.loads(raw)
        files = meta["files"]
        ok = (meta.get("format") == FORMAT and isinstance(meta.get("release"), str) and isinstance(files, dict)
              and all(safe_member(n) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
                      and isinstance(v.get("size"), int) and v["size"] >= 0 for n, v in files.items())
              and all(k in files for k in KERNEL_FILES))
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise BundleError(f"{path}: {META} is not a {FORMAT} description; make the bundle with this lfspass version")
    return meta


def _members(path: Path, digest: str, dest: Path | None):
    """Walk the bundle, checking every member; with ``dest``, write each one below it."""
    tar = _open(path)
    try:
        meta = _meta(path, tar, digest)
        yield meta
        seen: set[str] = set()
        for member in iter(tar.next, None):
            name = member.name
            want = meta["files"].get(name)
            if want is None or name in seen:
                raise BundleError(f"{path}: member {name!r} is not listed in {META} (or comes twice); not installed")
            if not member.isreg():
                raise BundleError(f"{path}: member {name} is not a plain file (links and devices are refused)")
            if member.size != want["size"]:
                raise BundleError(f"{path}: member {name} has {member.size} bytes, {META} says {want['size']}; "
                                  "the bundle was changed; not installed")
            seen.add(name)
            h = hashlib.sha256()
            src = tar.extractfile(member)
            target = None if dest is None else dest / name
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") if target is not None else contextlib.nullcontext() as out:
                while src is not None and (chunk := src.read(CHUNK)):
                    h.update(chunk)
                    if out is not None:
                        out.write(chunk)
            if target is not None:
                os.chmod(target, 0o644)
            if h.hexdigest() != want["sha256"]:
                raise BundleError(f"{path}: member {name} does not match its sha256 in {META} (the bundle was "
                                  "changed); not installed: copy the bundle again from where it was built")
        missing = sorted(set(meta["files"]) - seen)
        if missing:
            raise BundleError(f"{path}: {len(missing)} listed member(s) missing, first {missing[0]} (cut short?); "
                              "not installed: copy it again from where it was built")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path}: the bundle is cut short or damaged ({exc}); copy it again") from None
    finally:
        tar.close()


def digest_of(path: Path) -> str:
    m = NAME_RE.fullmatch(path.name)
    if m is None:
        raise InputError(f"{path}: a bundle keeps the name `lfspass bundle` gave it (lfspass-<release>-<sha256>.tar): "
                         "the name carries its digest; copy it under that name")
    return m.group("digest")


def verify(path: Path) -> Bundle:
    """Check the whole bundle, writing nothing; return what it holds."""
    digest = digest_of(path)
    walk = _members(path, digest, None)
    meta = next(walk)
    named = path.name[len("lfspass-"):-len(f"-{digest}.tar")]
    if meta["release"] != named:
        walk.close()
        raise BundleError(f"{path}: the name says release {named}, the bundle holds {meta['release']}; not installed")
    for _ in walk:
        pass
    return Bundle(path, digest, meta)


def extract(bundle: Bundle, dest: Path) -> None:
    """Write the bundle's members below the empty folder ``dest``, checking each byte again."""
    walk = _members(bundle.path, bundle.digest, dest)
    if next(walk) != bundle.meta:
        raise BundleError(f"{bundle.path}: changed while it was installed; not installed")
    for _ in walk:
        pass
