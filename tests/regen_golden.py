"""Rewrite the golden files the tests compare with: ``python tests/regen_golden.py [boot] [vm] [runtime] [tuning]``.

The golden tests only compare (tests/boot/test_boot_golden.py: what `doit grub vfio` writes;
tests/vm/test_vm.py: QEMU argv and libvirt XML; tests/vm/test_runtime_bind.py: bind = "runtime"
and iommufd launchers; tests/vm/test_tuning.py: [vms.tuning] on the two-node DL380).  After a change that is meant to alter
their output, run this, review ``git diff tests/boot/golden tests/vm/golden`` and commit it.
Nothing under pytest imports this file.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS / "boot"), str(TESTS / "vm")]


def regen_boot(tmp: Path) -> list[Path]:
    import test_boot_golden as boot
    from hostcases import CASES

    written = []
    for case in sorted(CASES):
        (tmp / case).mkdir(parents=True)
        produced = boot.produce(tmp / case, case)
        folder = boot.GOLDEN / case
        shutil.rmtree(folder, ignore_errors=True)  # a file doit no longer writes goes too
        folder.mkdir(parents=True)
        for name, path in sorted(produced.items()):
            (folder / name).write_text(path.read_text())
            written.append(folder / name)
    return written


def regen_vm(tmp: Path) -> list[Path]:
    import test_vm as vm

    texts: dict[str, str] = {}
    for case in sorted(vm.CASES):
        texts.update(vm.golden_texts(case, tmp / "vm"))
    vm.GOLDEN.mkdir(parents=True, exist_ok=True)
    for stale in vm.GOLDEN.iterdir():
        if stale.name not in texts:
            stale.unlink()
    for name, text in sorted(texts.items()):
        (vm.GOLDEN / name).write_text(text)
    return [vm.GOLDEN / name for name in sorted(texts)]


def regen_runtime(tmp: Path) -> list[Path]:
    import pytest
    import test_runtime_bind as rt

    texts: dict[str, str] = {}
    for case in sorted(rt.CASES):
        with pytest.MonkeyPatch.context() as mp:
            texts.update(rt.golden_texts(case, tmp / "runtime", mp))
    rt.GOLDEN.mkdir(parents=True, exist_ok=True)
    for stale in rt.GOLDEN.iterdir():
        if stale.name not in texts:
            stale.unlink()
    for name, text in sorted(texts.items()):
        (rt.GOLDEN / name).write_text(text)
    return [rt.GOLDEN / name for name in sorted(texts)]


def regen_tuning(tmp: Path) -> list[Path]:
    import test_tuning as tu
    from make_fixtures import build

    sysroot = build("dl380-two-node", tmp / "dl380-two-node")
    texts: dict[str, str] = {}
    for case in sorted(tu.CASES):
        texts.update(tu.golden_texts(case, tmp / "cases", sysroot))
    tu.GOLDEN.mkdir(parents=True, exist_ok=True)
    for stale in tu.GOLDEN.iterdir():
        if stale.name not in texts:
            stale.unlink()
    for name, text in sorted(texts.items()):
        (tu.GOLDEN / name).write_text(text)
    return [tu.GOLDEN / name for name in sorted(texts)]


def main(argv: list[str]) -> int:
    kinds = {"boot": regen_boot, "vm": regen_vm, "runtime": regen_runtime, "tuning": regen_tuning}
    wanted = argv or list(kinds)
    unknown = [k for k in wanted if k not in kinds]
    if unknown:
        print(f"error: unknown golden set {', '.join(unknown)}; choose from {', '.join(kinds)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lfspass-golden-") as tmp:
        for kind in wanted:
            for path in kinds[kind](Path(tmp) / kind):
                print(f"wrote {path.relative_to(TESTS.parent)}")
    print("review: git diff tests/boot/golden tests/vm/golden tests/vm/golden-runtime tests/vm/golden-tuning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
