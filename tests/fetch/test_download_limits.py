"""Downloads end: a retry budget against servers that cut and ignore Range, size caps, safe names, no shared inodes."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_cli
from lfspass.errors import DownloadError
from lfspass.fetch.download import fetch, safe_name, still_verified

PAYLOAD = os.urandom((2 << 20) + 4321)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
CUT = 300_000
HUGE = 1 << 50  # announced, never sent
LIAR_EXTRA = 64 << 10  # sent after the announced length


class Hostile(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.requests: list[str] = []
        self.sent = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def handle_error(self, request, client_address) -> None:
        pass  # a client hanging up mid-answer is what these tests do on purpose


class HostileHandler(BaseHTTPRequestHandler):
    """cutnorange: 200 for the whole file, hang up after CUT bytes, every time.
    bad206: 206 with no Content-Range, body from byte 0.  huge: announces HUGE bytes, sends CUT.
    endless: 200, no length, never ends.
    liar: says Content-Length N (the payload's), and sends LIAR_EXTRA more bytes on a keep-alive-less
    connection before it closes (a client that reads until close would keep them)."""

    protocol_version = "HTTP/1.1"
    server: Hostile

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(f"{self.path} {self.headers.get('Range')}")
        mode = self.path.strip("/").split("/")[0]
        self.close_connection = True
        if mode == "cutnorange":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:CUT])
            self.wfile.flush()
            self.connection.shutdown(2)
        elif mode == "bad206":
            self.send_response(206)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:CUT])
            self.wfile.flush()
            self.connection.shutdown(2)
        elif mode == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            self.wfile.write(PAYLOAD[:CUT])
        elif mode == "liar":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.server.sent += len(PAYLOAD) + LIAR_EXTRA   # counted first: the client may hang up mid-write
            try:
                self.wfile.write(PAYLOAD + b"\xff" * LIAR_EXTRA)
                self.wfile.flush()
            except OSError:
                pass  # the client stopped reading at Content-Length and hung up, as it should
        elif mode == "endless":
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.end_headers()
            block = b"\0" * (1 << 16)
            try:
                while self.server.sent < (1 << 30):  # the test's own guard: 1 GiB
                    self.wfile.write(block)
                    self.server.sent += len(block)
            except OSError:
                pass
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            try:
                self.wfile.write(PAYLOAD)
            except OSError:
                pass  # the client hung up, as some tests want


@pytest.fixture
def hostile():
    srv = Hostile()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _env(tmp_path: Path, **extra: str) -> dict:
    return {"LFSPASS_CACHE": str(tmp_path / "cache"), "LFSPASS_TIMEOUT": "5,5", **extra}


def test_cutting_server_that_ignores_range_ends_within_the_budget(hostile, tmp_path):
    dest = tmp_path / "disk.img"
    started = time.monotonic()
    proc = run_cli("fetch", hostile.url("cutnorange/disk.img"), "--sha256", SHA, "-o", str(dest),
                   env=_env(tmp_path, LFSPASS_RETRIES="3"))
    assert_one_error_line(proc, "gave up after 4 tries", "connection lost")
    assert proc.returncode == 1  # a failed run, not bad input
    assert len(hostile.requests) == 5  # the first try reached new bytes; then 4 fruitless ones
    assert time.monotonic() - started < 30
    assert not dest.exists()
    assert not (tmp_path / "cache/sha256").exists() or not any((tmp_path / "cache/sha256").iterdir())


def test_206_without_content_range_spends_the_budget(hostile, tmp_path):
    dest = tmp_path / "disk.img"
    with pytest.raises(DownloadError, match="206 answer without a usable Content-Range"):
        fetch(hostile.url("bad206/disk.img"), dest, sha256=SHA, cache_dir=tmp_path / "cache", retries=2)
    assert len(hostile.requests) == 3
    assert not dest.exists()


def test_endless_body_stops_at_the_ceiling_and_leaves_no_part(hostile, tmp_path):
    dest = tmp_path / "endless.iso"
    proc = run_cli("fetch", hostile.url("endless/endless.iso"), "--sha256", SHA, "-o", str(dest),
                   "--max-size", "8M", env=_env(tmp_path))
    assert_one_error_line(proc, "more than 8388608 bytes", "--max-size")
    assert not dest.exists() and not dest.with_name("endless.iso.part").exists()
    assert hostile.sent < (64 << 20)
    proc = run_cli("fetch", hostile.url("endless/endless.iso"), "--sha256", SHA, "-o", str(dest),
                   env=_env(tmp_path, LFSPASS_MAX_SIZE="4M"))
    assert_one_error_line(proc, "more than 4194304 bytes")
    assert not dest.with_name("endless.iso.part").exists()


def test_server_sending_past_its_content_length_gives_exactly_the_announced_bytes(hostile, tmp_path):
    """The liar: the download stops at Content-Length, so the file verifies and holds nothing more,
    even with a size cap of exactly that length."""
    dest = tmp_path / "disk.img"
    proc = run_cli("fetch", hostile.url("liar/disk.img"), "--sha256", SHA, "-o", str(dest),
                   "--max-size", str(len(PAYLOAD)), env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == PAYLOAD   # not one of the extra bytes
    assert len(hostile.requests) == 1 and hostile.sent == len(PAYLOAD) + LIAR_EXTRA   # one try, the lie told
    assert (tmp_path / "cache/sha256" / SHA).read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "disk.img"]   # no .part, no lock


def test_expected_size_from_the_caller_caps_the_body(hostile, tmp_path):
    dest = tmp_path / "disk.img"
    with pytest.raises(DownloadError, match=f"announces {len(PAYLOAD)} bytes but 1000 were expected"):
        fetch(hostile.url("data/disk.img"), dest, sha256=SHA, cache_dir=tmp_path / "cache", size=1000)
    assert not dest.with_name("disk.img.part").exists()
    # A server that announces nothing is held to the caller's size while it sends.
    with pytest.raises(DownloadError, match="more than 1000 bytes, its expected size"):
        fetch(hostile.url("endless/disk.img"), dest, sha256=SHA, cache_dir=tmp_path / "cache", size=1000)
    assert not dest.with_name("disk.img.part").exists()


def test_free_space_is_checked_before_writing(hostile, tmp_path):
    dest = tmp_path / "huge.img"
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    # A cap above the announced size: the free-space reserve is what refuses it.
    proc = run_cli("fetch", hostile.url("huge/huge.img"), "--sha256", SHA, "-o", str(dest), "--max-size", "4096T",
                   env=_env(tmp_path))
    assert_one_error_line(proc, f"{dest}: needs 1024.0 TiB but {tmp_path} has", "nothing was written")
    assert free < HUGE
    assert not dest.exists() and not dest.with_name("huge.img.part").exists()


@pytest.mark.parametrize("url, name", [
    ("http://h/a/..%2F..%2Fetc%2Fpasswd", "_.._etc_passwd"),
    ("http://h/a/%2e%2e", "download"),
    ("http://h/a/debian.iso", "debian.iso"),
    ("http://h/a/x%00y", "x_y"),
])
def test_url_names_are_one_segment(url, name):
    assert safe_name(url) == name


def test_fetch_without_o_stays_in_the_current_folder(hostile, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli("fetch", hostile.url("data/..%2F..%2Fescaped.img"), "--sha256", SHA,
                   cwd=work, env=_env(tmp_path, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in work.iterdir()] == ["_.._escaped.img"]
    assert not (tmp_path / "escaped.img").exists()


def test_cache_entry_is_a_separate_file(hostile, tmp_path):
    dest, cache = tmp_path / "a/disk.img", tmp_path / "cache"
    fetch(hostile.url("data/disk.img"), dest, sha256=SHA, cache_dir=cache)
    cached = cache / "sha256" / SHA
    assert cached.read_bytes() == PAYLOAD and not os.path.samefile(cached, dest)
    assert [p.name for p in cached.parent.iterdir()] == [SHA]  # no temporary file left
    with open(cached, "r+b") as fh:  # someone damages the cache entry in place
        fh.write(b"XXXX")
    assert dest.read_bytes() == PAYLOAD  # the verified file did not change with it
    # A cheap re-check: unchanged file = still verified; a write (new mtime) = not until hashed again.
    assert still_verified(dest, SHA, cache)
    with open(dest, "r+b") as fh:
        fh.write(b"YYYY")
    assert not still_verified(dest, SHA, cache)
    res = fetch(hostile.url("data/disk.img"), dest, sha256=SHA, cache_dir=cache)
    assert dest.read_bytes() == PAYLOAD and res.downloaded_bytes == len(PAYLOAD)


def test_large_file_cache_entry_is_a_record_rehashed_at_use(hostile, tmp_path, monkeypatch):
    """Without reflinks a large file is not copied into the cache: a hit copies from the
    recorded verified file, hashing as it copies; a changed original is not used."""
    import lfspass.fetch.cache as cache_mod

    monkeypatch.setattr(cache_mod, "COPY_LIMIT", 0)
    monkeypatch.setattr(cache_mod, "_reflink", lambda src, dst: False)
    cache = tmp_path / "cache"
    first = tmp_path / "a/disk.img"
    fetch(hostile.url("data/disk.img"), first, sha256=SHA, cache_dir=cache)
    assert [p.name for p in (cache / "sha256").iterdir()] == [SHA + ".ref"]
    second = fetch(hostile.url("data/disk.img"), tmp_path / "b/disk.img", sha256=SHA, cache_dir=cache)
    assert second.from_cache and len(hostile.requests) == 1
    assert not os.path.samefile(first, tmp_path / "b/disk.img")
    with open(first, "r+b") as fh:  # the recorded original changes
        fh.write(b"ZZZZ")
    third = fetch(hostile.url("data/disk.img"), tmp_path / "c/disk.img", sha256=SHA, cache_dir=cache)
    assert not third.from_cache and (tmp_path / "c/disk.img").read_bytes() == PAYLOAD
