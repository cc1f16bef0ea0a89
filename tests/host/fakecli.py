"""Run ``lfspass ARGS`` in its own process, with the fake kernel (fakekernel.py) acting on a synthetic sysfs.

``python tests/host/fakecli.py SPEC.json ARGS...``; SPEC holds ``root``, ``matches``
(address -> driver), ``vfio_ids``, ``failing``, ``fail`` ([[rel, value, errno], ...]: the
first write of that value to that attribute fails; errno "kill" ends the process there, as
SIGKILL would, before the write) and ``log`` (where the writes are saved as JSON, in order).  Everything else is the real command line: parser, errors, exit codes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakekernel import FakeKernel

from lfspass.cli.main import main
from lfspass.journal import sysfs


def _main(spec_path: str, args: list[str]) -> int:
    spec = json.loads(Path(spec_path).read_text())
    pending = [tuple(f) for f in spec.get("fail", [])]

    def fail(rel: str, value: str) -> int | None:
        for item in pending:
            if rel.endswith(item[0]) and value.strip() == item[1]:
                pending.remove(item)
                if item[2] == "kill":
                    Path(spec["log"]).write_text(json.dumps(kernel.writes))
                    os._exit(137)
                return int(item[2])
        return None

    kernel = FakeKernel(Path(spec["root"]), spec.get("matches", {}), vfio_ids=tuple(spec.get("vfio_ids", ())),
                        failing=tuple(spec.get("failing", ())), fail=fail)
    sysfs.set_writer(kernel)
    try:
        return main(args)
    finally:
        Path(spec["log"]).write_text(json.dumps(kernel.writes))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2:]))
