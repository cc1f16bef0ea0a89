"""Run a kernel tree's conf the way its make does, without make reading the top Makefile each time.

``make olddefconfig`` spends a sixth of its time (more on newer trees) reading the top
Makefile before it runs ``scripts/kconfig/conf -s --olddefconfig Kconfig`` in the O= folder
with the variables the Makefile exports (CC, CC_VERSION_TEXT, srctree, ARCH, KERNELVERSION...:
Kconfig's $(shell,...) and $(CC) read them).  The first run goes through make with make's
SHELL pointed at a small recorder, which writes down the command line, the folder and the
environment conf was started with, then runs the command with /bin/sh as make would have.
Later runs start that command with that environment directly, as long as nothing it came
from changed: the tree's Makefiles, conf itself, the compilers whose versions the Makefile
reads (CC, RUSTC, PAHOLE), the caller's environment, the architecture.  Anything else, or a
kbuild whose rule no longer looks like this, goes through make.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path

from lfspass.errors import LfspassError
from lfspass.fsutil import write_atomic

_RECORD = ".lfspass-conf-env.json"
_FORMAT = 1
# The recorder make runs every recipe line with; it records the line that runs conf.
_RECORDER = """#!/bin/sh
# lfspass (conf_direct.py): note how make starts the kernel's conf, then run the line as /bin/sh would.
case "$2" in
*scripts/kconfig/conf\\ *--olddefconfig*) { printf '%s\\0%s\\0' "$(pwd)" "$2"; env -0; } > "$LFSPASS_CONF_RECORD" ;;
esac
exec /bin/sh "$@"
"""
# Make's own bookkeeping (and what lfspass sets per run): not part of what conf needs.
_MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR",
              "LFSPASS_CONF_RECORD", "KCONFIG_CONFIG", "_")
# Shell bookkeeping that differs between callers without changing what make or conf do.
_VOLATILE = ("PWD", "OLDPWD", "SHLVL", "_", "LFSPASS_CONF_RECORD")
# Makefiles that decide the exported variables, and the tools whose versions the top Makefile reads.
_MAKEFILES = ("Makefile", "scripts/kconfig/Makefile", "scripts/Kbuild.include", "scripts/Makefile.compiler",
              "scripts/subarch.include")
_TOOLS = ("CC", "RUSTC", "PAHOLE")


def _stat(path: Path | str | None) -> list[int]:
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    return [st.st_mtime_ns, st.st_size] if st else []


def _inputs(kernel: Path, obj: Path, srcarch: str, make_vars: list[str], env: dict[str, str]) -> str:
    files = [*_MAKEFILES, f"arch/{srcarch}/Makefile"]
    return hashlib.sha256(json.dumps([_FORMAT, str(kernel), str(obj), make_vars,
                                      [_stat(kernel / f) for f in files], _stat(obj / "scripts/kconfig/conf"),
                                      sorted((k, v) for k, v in env.items() if k not in _VOLATILE)]).encode()).hexdigest()


def _tools(env: dict[str, str]) -> dict[str, list[int]]:
    found = {}
    for var in _TOOLS:
        words = shlex.split(env.get(var, ""))
        path = shutil.which(words[0], path=env.get("PATH")) if words else None
        if path:
            found[os.path.realpath(path)] = _stat(os.path.realpath(path))
    return found


def recorded(kernel: Path, obj: Path, srcarch: str, make_vars: list[str], env: dict[str, str]) -> dict | None:
    """The recorded start of conf for these inputs; None when make must run (and record) again."""
    try:
        rec = json.loads((obj / _RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("inputs") != _inputs(kernel, obj, srcarch, make_vars, env):
        return None
    if any(_stat(path) != st for path, st in rec.get("tools", {}).items()):
        return None
    try:   # only ever the tree's own conf, whatever the file says
        if Path(rec["cwd"], rec["argv"][0]).resolve() != (obj / "scripts/kconfig/conf").resolve():
            return None
        if not isinstance(rec["set"], dict) or not isinstance(rec["unset"], list):
            return None
    except (KeyError, IndexError, TypeError):
        return None
    return rec


def recorder(obj: Path) -> tuple[list[str], dict[str, str], Path]:
    """(make arguments, environment additions, record file) that make a run of make record conf's start."""
    tmp = Path(tempfile.mkdtemp(prefix="lfspass-conf-record-"))
    shell = tmp / "sh"
    shell.write_text(_RECORDER)
    shell.chmod(0o700)
    return [f"SHELL={shell}"], {"LFSPASS_CONF_RECORD": str(tmp / "record")}, tmp


def keep(kernel: Path, obj: Path, srcarch: str, make_vars: list[str], env: dict[str, str], tmp: Path,
         extra: dict[str, str], kconfig: str = "") -> None:
    """Save what the recorder saw (minus make's bookkeeping and ``extra``, which is per run).

    ``kconfig``: the top Kconfig that run named with KBUILD_KCONFIG (conf_runner.build_conf's
    empty one).  scripts/kconfig/Makefile runs ``conf ... $(KBUILD_KCONFIG)`` when it is set
    and ``conf ... Kconfig`` when not; no architecture sets it and lfspass clears it from the
    caller's environment, so the tree's own run is that line with ``Kconfig`` and it empty.
    """
    try:
        fields = (tmp / "record").read_bytes().split(b"\0")
    except OSError:
        return   # make ran conf by a line the recorder does not know: later runs use make too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cwd, cmd = fields[0].decode(errors="replace"), fields[1].decode(errors="replace")
    seen = dict(f.decode(errors="replace").split("=", 1) for f in fields[2:] if b"=" in f)
    seen = {k: v for k, v in seen.items() if k not in _MAKE_VARS and k not in extra}
    argv = shlex.split(cmd)
    if kconfig:
        if argv[-1:] != [kconfig] or seen.get("KBUILD_KCONFIG") != kconfig:
            return
        argv[-1], seen["KBUILD_KCONFIG"] = "Kconfig", ""
    if not argv or Path(cwd, argv[0]).resolve() != (obj / "scripts/kconfig/conf").resolve():
        return
    # Only what make added, changed or dropped: the caller's own variables (tokens and all)
    # stay out of the file; the inputs hash says they are the same when it is used.
    rec = {"inputs": _inputs(kernel, obj, srcarch, make_vars, env), "tools": _tools(seen), "cwd": cwd,
           "argv": argv, "set": {k: v for k, v in seen.items() if env.get(k) != v},
           "unset": sorted(k for k in env if k not in seen and k not in _VOLATILE)}
    try:
        write_atomic(obj / _RECORD, json.dumps(rec), mode=0o600)
    except (OSError, LfspassError):
        pass   # only speed is lost


def command(rec: dict, env: dict[str, str], config: Path,
            extra: dict[str, str]) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, folder) that start conf on ``config`` as make started it from ``env``
    (the caller's environment, as given to make)."""
    env = {**{k: v for k, v in env.items() if k not in rec["unset"]}, **rec["set"],
           "KCONFIG_CONFIG": str(config.resolve()), **extra}
    return rec["argv"], env, rec["cwd"]
