"""conf started as the kernel's make starts it: the record of that start, when it is used, when not.

Debian's 6.1 tree, a fresh O= folder per test: the first configure builds conf through make
(which records how make starts conf), the next ones start conf directly; every result is
the kernel's own `make olddefconfig` result on the same input.
"""
from __future__ import annotations

import json
import lzma
import os
from pathlib import Path

import pytest

from kernel_trees import kernel_olddefconfig, parity_differences
from lfspass.kernel.kconfig import conf_runner
from lfspass.kernel.kconfig.configure import configure
from lfspass.model import Request

DEBIAN_CONFIG = Path("/usr/src/linux-config-6.1/config.amd64_none_amd64.xz")
# A tristate, a string with a space and an int: each kind of line conf reads.
REQUESTS = [Request("VFIO", "m"), Request("VFIO_PCI", "m"), Request("LOCALVERSION", "-lab test"),
            Request("LOG_BUF_SHIFT", "18")]
RECORD = ".lfspass-conf-env.json"


def _start(tmp: Path, name: str) -> Path:
    cfg = tmp / name
    cfg.write_bytes(lzma.decompress(DEBIAN_CONFIG.read_bytes()))
    return cfg


@pytest.fixture()
def obj(tmp_path: Path) -> Path:
    return tmp_path / "obj"


def test_first_run_records_the_start_and_later_runs_use_it(linux_tree: Path, obj: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("LFSPASS_TEST_TOKEN", "s3cret-value")    # a caller's secret: never written down
    start = lzma.decompress(DEBIAN_CONFIG.read_bytes()).decode()
    expected = kernel_olddefconfig(linux_tree, start, REQUESTS, tmp_path / "make")
    first = _start(tmp_path, "first")
    configure(linux_tree, first, REQUESTS, obj=obj)            # builds conf through make, records
    rec_file = obj / RECORD
    rec = json.loads(rec_file.read_text())
    assert rec["argv"] == ["scripts/kconfig/conf", "-s", "--olddefconfig", "Kconfig"]
    assert Path(rec["cwd"]).resolve() == obj.resolve()
    assert rec["set"]["srctree"] == str(linux_tree.resolve()) and rec["set"]["KBUILD_KCONFIG"] == ""
    assert "CC_VERSION_TEXT" in rec["set"] and "LC_ALL" in rec["unset"]      # the Makefile unexports it
    assert "s3cret-value" not in rec_file.read_text() and rec_file.stat().st_mode & 0o777 == 0o600
    assert parity_differences(expected, first.read_text()) == [] and first.read_text() == expected

    # The second configure starts conf itself; make, if it ran, would have to record again.
    before = rec_file.stat().st_mtime_ns
    second = _start(tmp_path, "second")
    configure(linux_tree, second, REQUESTS, obj=obj)
    assert rec_file.stat().st_mtime_ns == before
    assert second.read_text() == expected


def test_an_edited_makefile_or_environment_goes_through_make_again(linux_tree: Path, obj: Path,
                                                                    tmp_path: Path, monkeypatch) -> None:
    configure(linux_tree, _start(tmp_path, "a"), REQUESTS, obj=obj)
    rec_file = obj / RECORD
    first = json.loads(rec_file.read_text())["inputs"]
    kc = conf_runner.locate(linux_tree, "x86_64", obj)
    assert conf_runner.conf_direct.recorded(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(),
                                            conf_runner.controlled_env()) is not None
    # Another environment (a variable make passes on to conf's $(shell ...) probes): not this record.
    monkeypatch.setenv("LFSPASS_TEST_OTHER", "1")
    assert conf_runner.conf_direct.recorded(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(),
                                            conf_runner.controlled_env()) is None
    cfg = _start(tmp_path, "b")
    configure(linux_tree, cfg, REQUESTS, obj=obj)             # make runs and records anew
    assert json.loads(rec_file.read_text())["inputs"] != first
    # A Makefile newer than the record (an edited tree): make again.
    makefile = linux_tree / "scripts" / "kconfig" / "Makefile"
    st = makefile.stat()
    try:
        os.utime(makefile, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert conf_runner.conf_direct.recorded(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(),
                                                conf_runner.controlled_env()) is None
    finally:
        os.utime(makefile, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_record_of_another_conf_line_is_not_used(linux_tree: Path, obj: Path, tmp_path: Path) -> None:
    """A record whose command is not the tree's conf (a damaged or foreign file) is never run."""
    configure(linux_tree, _start(tmp_path, "a"), REQUESTS, obj=obj)
    rec_file = obj / RECORD
    rec = json.loads(rec_file.read_text())
    rec_file.write_text(json.dumps({**rec, "tools": {str(tmp_path / "gone"): [1, 1]}}))
    kc = conf_runner.locate(linux_tree, "x86_64", obj)
    assert conf_runner.conf_direct.recorded(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(),
                                            conf_runner.controlled_env()) is None   # a tool changed
    rec_file.write_text(json.dumps({**rec, "argv": ["/bin/false"]}))
    assert conf_runner.conf_direct.recorded(kc.kernel, kc.obj, kc.srcarch, kc.make_vars(),
                                            conf_runner.controlled_env()) is None   # not the tree's conf
    rec_file.write_text("{not json")
    cfg = _start(tmp_path, "b")
    configure(linux_tree, cfg, REQUESTS, obj=obj)             # through make, which records again
    assert json.loads(rec_file.read_text())["argv"][0] == "scripts/kconfig/conf"
