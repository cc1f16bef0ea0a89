"""Test-only: with $LFSPASS_FAKE_KERNEL naming a spec (see ../fakecli.py), every Python process started
with this folder first on PYTHONPATH writes sysfs through the fake kernel instead of the real one.

A launcher script runs `python -m lfspass bind` / `release` itself; this is how its test gets the
fake kernel into those processes without any test hook in lfspass.  Then the sitecustomize
this one shadows runs (the hook log's, tests/hooktrace/).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path


def _install(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from fakekernel import FakeKernel

    from lfspass.journal import sysfs

    sysfs.set_writer(FakeKernel(Path(spec["root"]), spec.get("matches", {}), vfio_ids=tuple(spec.get("vfio_ids", ())),
                                failing=tuple(spec.get("failing", ()))))


def _run_shadowed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    found = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if found is not None and found.loader is not None and found.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(found)
        saved, sys.path[:] = sys.path[:], rest   # so the next one, looking for its own shadowed one, skips this
        try:
            found.loader.exec_module(module)
        finally:
            sys.path[:] = saved


if __name__ == "sitecustomize":
    _run_shadowed()
    if os.environ.get("LFSPASS_FAKE_KERNEL"):
        _install(os.environ["LFSPASS_FAKE_KERNEL"])
