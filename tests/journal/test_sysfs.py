"""Journal entries of kind "sysfs": a device's driver state before/after and every write, undone by rollback."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from make_fixtures import build

from lfspass import journal
from lfspass.errors import LfspassError
from lfspass.journal import sysfs
from lfspass.journal.rollback import list_runs, rollback
from lfspass.journal.sysfs import State

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
from fakekernel import FakeKernel

T10 = "0000:82:00.0"


@pytest.fixture
def root(tmp_path: Path):
    host = build("dl380-t10-on-host", tmp_path / "dl380")
    old = sysfs.set_writer(FakeKernel(host, {T10: "nouveau", "0000:82:00.1": "snd_hda_intel"}))
    yield host
    sysfs.set_writer(old)


def _bind(root: Path) -> State:
    with journal.run(root, "bind test"), sysfs.editing(root, T10):
        return sysfs.apply(root, T10, State("vfio-pci", "vfio-pci"))


def test_entry_holds_states_and_every_write(root: Path) -> None:
    assert _bind(root) == State("vfio-pci", "vfio-pci")
    (run,) = list_runs(root)
    (entry,) = run["entries"]
    assert entry["kind"] == "sysfs" and entry["path"] == f"sys/bus/pci/devices/{T10}"
    assert (entry["before"], entry["after"], entry["done"]) == ("driver=nouveau override=-",
                                                                "driver=vfio-pci override=vfio-pci", True)
    assert [(Path(w[0]).name, w[1], w[2]) for w in entry["writes"]] == [
        ("driver_override", "vfio-pci", "ok"), ("unbind", T10, "ok"), ("drivers_probe", T10, "ok")]


def test_rollback_restores_and_is_itself_a_run(root: Path) -> None:
    _bind(root)
    _, restored = rollback(root)
    assert restored == [f"sys/bus/pci/devices/{T10}"]
    assert sysfs.read_state(root, T10) == State("nouveau", None)
    rollback(root)   # the rollback was journaled too: undoing it binds again
    assert sysfs.read_state(root, T10) == State("vfio-pci", "vfio-pci")


def test_a_device_moved_by_hand_since_needs_force(root: Path) -> None:
    _bind(root)
    sysfs.writer().write(root / "sys/bus/pci/drivers/vfio-pci/unbind", T10)   # someone unbinds it by hand
    with pytest.raises(LfspassError, match=f"sys/bus/pci/devices/{T10} under .* changed since lfspass wrote it"):
        rollback(root)
    assert sysfs.read_state(root, T10) == State(None, "vfio-pci")
    rollback(root, force=True)
    assert sysfs.read_state(root, T10) == State("nouveau", None)


def test_writer_refuses_to_create_a_missing_attribute(tmp_path: Path) -> None:
    """The real writer never makes a file: an attribute missing from the tree is an error."""
    with pytest.raises(FileNotFoundError):
        sysfs.SysfsWriter().write(tmp_path / "drivers_probe", "0000:82:00.0")
    assert not (tmp_path / "drivers_probe").exists()


def test_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "root/sys/bus/pci/devices"
    planted.mkdir(parents=True)
    (planted / T10).symlink_to("/sys/bus/pci/devices")
    with pytest.raises(LfspassError, match="outside the host root"):
        sysfs.read_state(tmp_path / "root", T10)
