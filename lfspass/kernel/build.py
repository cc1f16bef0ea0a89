"""Kernel build: prepare the source, run `make bzImage modules` reproducibly, keep the log."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import TextIO

from lfspass.diskspace import ensure_room, run_guarded, space
from lfspass.errors import BuildError, InputError, RecipeError
from lfspass.fsutil import require_tool, write_atomic
from lfspass.kernel.kconfig.conf_runner import controlled_env
from lfspass.kernel.release import extracted_tree, tarball_info
from lfspass.kernel.tarball import extraction_marker, is_tarball, unpacked_size, unsafe_member

_CC_LINE = re.compile(r"^\s+CC(\s|\s\[M\]\s)")
_ERROR_LINE = re.compile(r"error:|Error \d|\*\*\*|undefined reference")


@dataclass(frozen=True)
class BuildLayout:
    """Where one recipe's kernel is prepared and built (everything under ``build_dir``)."""

    build_dir: Path

    @property
    def obj(self) -> Path:
        return self.build_dir / "obj"

    @property
    def config(self) -> Path:
        return self.obj / ".config"

    @property
    def log(self) -> Path:
        return self.build_dir / "build.log"

    @property
    def stamp(self) -> Path:
        """Digest of the build outputs; rewritten only when they change (install's file_dep)."""
        return self.build_dir / "build.json"

    @property
    def config_result(self) -> Path:
        """What the config step decided (skipped/resolved requests), read by the manifest."""
        return self.build_dir / "config.json"

    @property
    def bzimage(self) -> Path:
        return self.obj / "arch" / "x86" / "boot" / "bzImage"

    @property
    def system_map(self) -> Path:
        return self.obj / "System.map"


def source_identity(source: Path, build_dir: Path) -> Path:
    """The file doit watches for a source: the tarball itself, or a tree's top Makefile.

    A tree folder is used read-only and in place; its identity is cheap on purpose
    (Makefile + localversion files, see :func:`tree_identity`): edits deeper in the
    tree are seen by make, not by doit (``doit forget kernel`` forces a rebuild).
    """
    return source if is_tarball(source) else source / "Makefile"


def tree_identity(tree: Path) -> str:
    """A cheap digest of what names a tree's release: Makefile, localversion*, git HEAD."""
    h = hashlib.sha256()
    for f in [tree / "Makefile", *sorted(tree.glob("localversion*")), tree / ".git" / "HEAD"]:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def prepare_source(source: Path, build_dir: Path) -> Path:
    """The tree to build: a folder as is, or a tarball extracted once into ``<build_dir>/src``.

    Extraction goes to a temporary folder beside the target and is renamed into
    place, with a marker naming the tarball (path, size, mtime): an interrupted run
    leaves no half tree, and another tarball with the same top folder replaces it.
    """
    if not source.exists():
        raise RecipeError(f"[kernel] source = {str(source)!r}: no such folder or tarball; unpack the kernel "
                          "there or name its linux-*.tar.xz, or set source = \"\" and version = \"<release>\" "
                          "to use the kernel already installed under the root (then run `doit grub vfio`)")
    if source.is_dir():
        if not (source / "Makefile").is_file() or not (source / "Kconfig").is_file():
            raise BuildError(f"[kernel] source = {str(source)!r}: not a Linux tree (no Makefile/Kconfig); "
                             "point it at an extracted kernel source folder")
        if (source / ".config").exists():
            raise BuildError(f"{source}/.config exists: the tree was configured in place, and make refuses "
                             f"out-of-tree (O=) builds then; run `make -C {source} mrproper` or use a clean copy")
        return source
    info = tarball_info(source, build_dir)
    done = extracted_tree(source, build_dir, info)
    if done is not None and done.is_dir():
        return done
    tree = build_dir / "src" / info["top"]
    marker = extraction_marker(tree)
    require_tool("tar", "tar")
    tree.parent.mkdir(parents=True, exist_ok=True)
    advice = "free space, or set [kernel] build_dir on another filesystem"
    ensure_room(tree.parent, unpacked_size(source), f"kernel: extracting {source} into {tree.parent}", BuildError,
                advice)
    print(f"kernel: extracting {source} into {tree.parent} (once)", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=tree.parent))
    # Every member is judged while tar extracts (on another core): the tree is renamed into
    # place only when none would leave it.
    judged: list[str | None] = []
    judge = threading.Thread(target=lambda: judged.append(unsafe_member(source)), daemon=True)
    judge.start()
    try:
        proc = run_guarded(["tar", "-C", str(tmp), "-xf", str(source)], tree.parent,
                           f"kernel: extracting {source} into {tree.parent}", BuildError, advice=advice, text=True)
        judge.join()
        if judged and judged[0]:
            said = [line.removeprefix("tar: ") for line in proc.stderr.strip().splitlines()
                    if "Exiting with failure status" not in line]
            raise InputError(f"{source}: member {judged[0]}: it would land outside the kernel tree, so nothing "
                             f"was extracted{' (tar: ' + said[0] + ')' if said else ''}; use the release tarball "
                             "as kernel.org or Debian ships it")
        if proc.returncode != 0 or not (tmp / info["top"]).is_dir():
            # tar's first own complaint, not its closing "Exiting with failure status" line.
            said = [l for l in proc.stderr.strip().splitlines() if "Exiting with failure status" not in l]
            first = (said or ["no tree in it"])[0]
            sp = space(tree.parent)
            # A full disk shows as "No space left" or as a short write ("Wrote only 512 of 10240 bytes").
            if "No space left" in proc.stderr or "Wrote only" in proc.stderr or (sp is not None and sp.room == 0):
                fix = f"No space left for it: {sp.said() if sp else tree.parent}; {advice}"
            else:
                fix = "check the file (`tar -tf` lists it) or fetch it again (Debian: apt-get install --reinstall linux-source-X.Y)"
            raise BuildError(f"{source}: extraction failed (tar: {first.removeprefix('tar: ')}); {fix}")
        marker.unlink(missing_ok=True)
        if tree.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=tree.parent))
            os.rename(tree, old / "tree")
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp / info["top"], tree)
        write_atomic(marker, json.dumps({"key": info["key"], "source": str(source)}) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def build_timestamp(recipe_timestamp: str, tree: Path) -> str:
    """KBUILD_BUILD_TIMESTAMP: the recipe's, else SOURCE_DATE_EPOCH, else the tree Makefile's mtime."""
    if recipe_timestamp:
        return recipe_timestamp
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not epoch.isdigit():
        epoch = str(int((tree / "Makefile").stat().st_mtime))
    # The form `date` prints under LC_ALL=C TZ=UTC; the kernel puts it in `uname -v`.
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%a %b %d %H:%M:%S UTC %Y")


def ccache_dir(build_dir: Path) -> Path:
    """$CCACHE_DIR when set (shared caches), else ``ccache`` beside the build folder."""
    return Path(os.environ.get("CCACHE_DIR") or build_dir.resolve().parent / "ccache")


def make_env(tree: Path, build_dir: Path, timestamp: str, use_ccache: bool) -> tuple[dict[str, str], list[str]]:
    """(environment additions, make variables) for a reproducible build.

    Fixed user/host/version/timestamp make ``uname -v`` and the modules' vermagic the
    same on every machine; the prefix maps keep build paths out of the objects
    (kbuild maps the tree for ``__FILE__`` with its own -fmacro-prefix-map; these map debug
    info only, as Documentation/kbuild/reproducible-builds.rst says, so kbuild's stays in effect:
    a -ffile-prefix-map given later would override it).
    ``LOCALVERSION=`` stops setlocalversion adding ``+`` for a git tree, so the
    release is the one lfspass computes from the Makefile and the recipe.
    """
    tree, obj = tree.resolve(), (build_dir / "obj").resolve()
    # gcc tries the last map first: files below the tree and O= lose the prefix; the compilation
    # folder (O= itself, DW_AT_comp_dir) becomes "." through the first map, the only one it matches.
    maps = f"-fdebug-prefix-map={obj}=. -fdebug-prefix-map={tree}/= -fdebug-prefix-map={obj}/="
    env = {
        "KBUILD_BUILD_TIMESTAMP": timestamp,
        "KBUILD_BUILD_USER": "lfspass",
        "KBUILD_BUILD_HOST": "lfspass",
        "KBUILD_BUILD_VERSION": "1",
        "KCFLAGS": maps,
        "KAFLAGS": maps,   # gcc hands the maps on to the assembler (the .S files' compilation folder)
        "LOCALVERSION": "",
        "LC_ALL": "C",
        "TZ": "UTC",
    }
    make_vars: list[str] = []
    if use_ccache and shutil.which("ccache"):
        base = Path(os.path.commonpath([tree, obj]))
        env["CCACHE_DIR"] = str(ccache_dir(build_dir))
        if base != Path("/"):
            env["CCACHE_BASEDIR"] = str(base)  # paths below it hash as relative ones
        # The prefix maps name absolute paths but make the object independent of them,
        # so they must not split the cache between two build folders.
        env["CCACHE_IGNOREOPTIONS"] = "-fdebug-prefix-map=*"
        env["CCACHE_NOHASHDIR"] = "1"
        # The kernel Makefile sets CC itself, so it must be a make variable, not env.
        make_vars.append("CC=ccache gcc")
    return env, make_vars


def reproducible_env_digest(env: dict[str, str]) -> dict[str, str]:
    """The environment make runs in, as the manifest records it: lfspass's settings; every
    kbuild variable the caller exported (CROSS_COMPILE, LLVM, KCFLAGS, ARCH, ...) is removed."""
    return {k: env[k] for k in sorted(env) if not k.startswith("CCACHE_")}


def make_command(tree: Path, build_dir: Path, jobs: int, make_vars: list[str], *targets: str) -> list[str]:
    n = jobs or os.cpu_count() or 1
    return ["make", "-C", str(tree.resolve()), f"O={(build_dir / 'obj').resolve()}", f"-j{n}",
            *make_vars, *targets]


class _Progress:
    """A counter of compiled files: one rewritten line on a tty, else a line a minute."""

    def __init__(self, expected: int, stream: TextIO | None = None, label: str = "kernel build") -> None:
        # sys.__stderr__: the terminal even where sys.stderr is redirected; None only without one.
        self.stream: TextIO = stream or sys.__stderr__ or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.expected, self.count, self.start, self.label = expected, 0, time.monotonic(), label
        self.last = 0.0

    def line(self, text: str) -> None:
        if not _CC_LINE.match(text):
            return
        self.count += 1
        now = time.monotonic()
        if now - self.last >= (0.2 if self.tty else 60.0):
            self.last = now
            self.show(now)

    def show(self, now: float) -> None:
        pct = f" (~{min(99, 100 * self.count // self.expected)}%)" if self.expected else ""
        msg = f"{self.label}: {self.count} files compiled{pct}, {int(now - self.start)} s"
        self.stream.write(f"\r{msg}\x1b[K" if self.tty else msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def last_error(log_lines: list[str]) -> str:
    """The most telling failure line: the last compiler/linker error, else make's own."""
    hits = [l.strip() for l in log_lines if _ERROR_LINE.search(l)]
    precise = [l for l in hits if "error:" in l or "undefined reference" in l]
    return (precise or hits or [l.strip() for l in log_lines if l.strip()] or ["no output"])[-1]


def run_make(cmd: list[str], env_add: dict[str, str], log: Path, counter: Path | None = None,
             label: str = "kernel build") -> None:
    """Run ``cmd`` appending to ``log``; on failure raise BuildError with the last error line.

    ``counter`` keeps the number of files the last run compiled (the progress line's 100%);
    ``label`` begins the progress line (an external module's build is not the kernel's)."""
    require_tool("make", "build-essential")
    env = controlled_env(env_add)
    expected = 0
    if counter is not None:
        try:
            expected = int(counter.read_text())
        except (OSError, ValueError):
            pass
    progress = _Progress(expected, label=label)
    tail: list[str] = []
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8", errors="replace") as fh:
        fh.write("$ " + " ".join(f"{k}={v!r}" for k, v in env_add.items()) + " " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for text in proc.stdout:
            fh.write(text)
            progress.line(text)
            tail.append(text)
            del tail[:-400]
        rc = proc.wait()
    progress.close()
    if rc != 0:
        raise BuildError(f"kernel build failed (`{' '.join(cmd[3:])}` exited {rc}): {last_error(tail)}; "
                         f"full log: {log}")
    if counter is not None and progress.count > expected:
        write_atomic(counter, f"{progress.count}\n")
