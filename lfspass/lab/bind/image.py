"""The runtime-bind lab's image: the lab initramfs plus Debian's python3 (the stdlib modules and
libraries `lfspass bind` / `release` load), that part of lfspass, pluggy, and /nested.sh, the
steps script lab-init.sh runs after it saved the host (the nested lab's hook)."""
from __future__ import annotations

import ast
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from lfspass.diskspace import ensure_room
from lfspass.errors import InputError, ToolFailed
from lfspass.fsutil import write_atomic
from lfspass.lab.initramfs import LAB_ADVICE, BUSYBOX, Archive, lab_archive, source_date_epoch
from lfspass.lab.nested.image import shared_libraries
from lfspass.render import TEMPLATES

PYTHON = Path("/usr/bin/python3.11")   # Debian 12's; it finds its stdlib at /usr/lib/python3.11
PKG = Path(__file__).resolve().parents[3]          # the folder holding the lfspass package
STEPS_SCRIPT = TEMPLATES / "lab-bind.sh"
GUEST_PATH = "opt/lfspass"             # lfspass and pluggy in the guest (PYTHONPATH)
# What lfspass/__main__.py does, without runpy (not packed: python -c needs none of it).
MAIN = "import sys; from lfspass.cli.main import main; sys.exit(main())"
WRAPPER = ("#!/bin/sh\n# lfspass in the runtime-bind lab guest: Debian's python3 without site-packages.\n"
           f"PYTHONPATH=/{GUEST_PATH} exec {PYTHON} -S -B -c '{MAIN}' \"$@\"\n")
# Where `lfspass bind` / `release` start: the command line and the bind command (cli.main
# imports every command module and leaves out one that is not there, so only bind's is packed).
ENTRY = ("lfspass", "lfspass.__main__", "lfspass.cli", "lfspass.cli.main", "lfspass.cli.bind")


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    for path in (PKG.joinpath(*parts, "__init__.py"), PKG.joinpath(*parts).with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> list[str]:
    """Every module an import statement in ``path`` names (module level or inside functions)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def lfspass_modules(entry: tuple[str, ...] = ENTRY) -> dict[str, Path]:
    """The lfspass modules reachable from ``entry`` by import statements, at module level or inside functions."""
    found: dict[str, Path] = {}
    todo = list(entry)
    while todo:
        name = todo.pop()
        path = None if name in found else _module_file(name)
        if path is None:
            continue
        found[name] = path
        todo += [name.rpartition(".")[0], *(n for n in _imports(path) if n.split(".")[0] == "lfspass")]
    return dict(sorted(found.items()))


def other_imports(modules: dict[str, Path]) -> list[str]:
    """The modules outside lfspass that ``modules`` import anywhere (stdlib and pluggy; names, not attributes)."""
    return sorted({n.split(".")[0] for p in modules.values() for n in _imports(p)} - {"lfspass", "__future__"})


# Run by the host's Debian python3 as the guest runs it: import the packed lfspass modules and
# every module they import anywhere (a function's own imports too; a missing optional one is
# skipped), run the commands' --help and an error path, then list every module file loaded
# (stdlib .py files and lib-dynload extensions).
_PROBE = """\
import contextlib, importlib, io, json, sys
mine, others = json.loads(sys.argv[1])
for name in mine:
    importlib.import_module(name)
for name in others:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
from lfspass.cli.main import main
for argv in (["bind", "--help"], ["release", "--help"], ["bind", "--host-root", "/nonexistent", "00:01.0"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""


def python_files(modules: dict[str, Path]) -> list[Path]:
    """Debian's python3, the stdlib files importing ``modules`` loads, the libraries ldd names for them, pluggy."""
    import pluggy

    if not PYTHON.is_file():
        raise ToolFailed(f"{PYTHON} not found: the runtime-bind lab runs Debian's python3 in the lab guest; "
                         "apt-get install python3.11-minimal")
    pluggy_dir = Path(pluggy.__file__).parent
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
           "PYTHONPATH": os.pathsep.join([str(PKG), str(pluggy_dir.parent)])}
    # __main__ runs the command line when imported: it is packed, not probed.
    probe = sorted(m for m in modules if not m.endswith(".__main__"))
    proc = subprocess.run([str(PYTHON), "-S", "-B", "-c", _PROBE, json.dumps([probe, other_imports(modules)])],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ToolFailed(f"{PYTHON} could not import lfspass's bind commands: "
                         f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    stdlib = Path("/usr/lib/python3.11")
    loaded = [Path(p) for p in json.loads(proc.stdout)]
    files = {PYTHON, *(p for p in loaded if p.is_relative_to(stdlib))}
    # The landmark python3 looks for to find its prefix (os is frozen, so never loaded from there).
    files.add(stdlib / "os.py")
    for ext in [PYTHON, *(p for p in files if p.suffix == ".so")]:
        files.update(shared_libraries(ext))
    return sorted(files)


def bind_archive(root: Path, release: str, busybox: Path = BUSYBOX) -> Archive:
    """The lab initramfs (modules, vfio files, /init) + python3 + lfspass's bind part + pluggy + /nested.sh."""
    import pluggy

    arc = lab_archive(root, release, busybox)
    modules = lfspass_modules()
    for path in python_files(modules):
        # A regular file at the path python3 (or the loader) opens it by: links resolved here.
        arc.add_file(str(path).lstrip("/"), path.read_bytes(), os.stat(path).st_mode & 0o755 | 0o644)
    for path in modules.values():
        arc.add_file(f"{GUEST_PATH}/{path.relative_to(PKG).as_posix()}", path.read_bytes())
    pluggy_dir = Path(pluggy.__file__).parent
    for path in sorted(pluggy_dir.glob("*.py")):
        arc.add_file(f"{GUEST_PATH}/pluggy/{path.name}", path.read_bytes())
    arc.add_file("usr/bin/lfspass", WRAPPER.encode(), 0o755)
    arc.add_file("nested.sh", STEPS_SCRIPT.read_bytes(), 0o755)
    return arc


def build_bind_image(out: Path, root: Path, release: str) -> bool:
    """Write the gzip'd initramfs to ``out`` (atomically, only if its bytes change); True when changed."""
    data = bind_archive(Path(root), release).newc(source_date_epoch())
    blob = gzip.compress(data, compresslevel=1, mtime=0)
    ensure_room(out.parent, len(blob), f"lab: the runtime-bind initramfs {out}", InputError, LAB_ADVICE)
    return write_atomic(out, blob)


if __name__ == "__main__":  # python -m lfspass.lab.bind.image: what the guest gets
    mods = lfspass_modules()
    print("\n".join([*mods, *map(str, python_files(mods))]), file=sys.stdout)
