"""The free-space reserve itself: its size, the streaming guard's cost, and the watch that stops a tool."""
from __future__ import annotations

import os

import pytest

from lfspass import diskspace
from lfspass.diskspace import Guard, ensure_room, run_guarded, space
from lfspass.errors import LfspassError
from smallfs import free_bytes, small_fs


@pytest.fixture
def small(tmp_path):
    with small_fs(tmp_path / "small", 64) as folder:
        yield folder


def test_reserve_is_five_percent_of_a_small_filesystem_and_one_gib_of_a_big_one(small):
    sp = space(small / "not" / "made" / "yet")  # a folder still to be made: its nearest parent counts
    assert sp is not None and sp.folder == small
    assert sp.total == 64 << 20 and sp.reserve == (64 << 20) * 5 // 100
    big = diskspace.Space(small, 100 << 30, 500 << 30)
    assert big.reserve == 1 << 30 and big.room == 99 << 30


def test_ensure_room_refuses_what_would_cross_it(small):
    room = space(small).room
    ensure_room(small, room, "a file that just fits")
    with pytest.raises(LfspassError) as err:
        ensure_room(small, room + 1, "one byte more")
    assert err.value.one_line().startswith(f"one byte more: needs 60.8 MiB but {small} has 64.0 MiB free")


def test_guard_looks_rarely_when_roomy_and_stops_before_the_reserve(small, monkeypatch):
    calls = []
    real = os.statvfs
    monkeypatch.setattr(diskspace.os, "statvfs", lambda p: calls.append(p) or real(p))
    guard, written, chunk = Guard(small), 0, 1 << 20
    with open(small / "f", "wb") as fh:
        while (low := guard.allow(chunk)) is None:
            fh.write(b"\0" * chunk)
            written += chunk
    assert low.free - chunk < low.reserve <= low.free  # stopped at the chunk that would cross it
    assert free_bytes(small) >= low.reserve
    assert len(calls) < written // chunk  # not a statvfs per chunk, even on 64 MiB
    # A roomy filesystem: one look per 64 MiB at most.
    calls.clear()
    roomy = Guard(small.parent)
    assert space(small.parent).room > 1 << 30, "this test wants 1 GiB free beside its temporary folder"
    calls.clear()
    for _ in range(1024):
        assert roomy.allow(chunk) is None
    assert len(calls) <= 1024 // 64 + 1


def test_watch_stops_a_tool_that_crosses_the_reserve(small):
    """A writer that never ends by itself (1 MiB every 0.25 s) on a filesystem with 8 MiB of room."""
    with open(small / "filler", "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, space(small).room - (8 << 20))
    script = f"while :; do head -c 1048576 /dev/zero >> {small}/grow || true; sleep 0.25; done"
    with pytest.raises(LfspassError) as err:
        run_guarded(["sh", "-c", script], small, "growing a file")
    assert err.value.one_line().startswith("growing a file: stopped sh before the disk filled up:"), err.value
    assert free_bytes(small) > 0
