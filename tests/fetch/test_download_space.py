"""No download fills a disk: size caps, the free-space reserve, and SIGTERM keeping only a resumable .part."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_cli
from smallfs import free_bytes, small_fs

PAYLOAD = os.urandom(4 << 20)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
HALF = len(PAYLOAD) // 2
GUARD = 256 << 20  # the server's own stop: no test here may stream more than this


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.sent = 0  # body bytes handed to the socket, all answers together
        self.ranges: list[str | None] = []
        self.release = threading.Event()  # ends a held answer

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def handle_error(self, request, client_address) -> None:
        pass  # the client hangs up mid-body on purpose


class Handler(BaseHTTPRequestHandler):
    """endless: 200, no length, no Range, never ends (up to GUARD).  big: announces 100 MiB, sends
    it on request.  huge: announces 1 TiB.  hold / holdnorange: the first answer sends half of
    PAYLOAD and waits; hold serves Range (Accept-Ranges: bytes), holdnorange does not."""

    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args) -> None:
        pass

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            return False
        self.server.sent += len(data)
        return True

    def do_GET(self) -> None:
        srv, mode = self.server, self.path.strip("/").split("/")[0]
        srv.ranges.append(self.headers.get("Range"))
        self.close_connection = True
        if mode == "endless":
            self.protocol_version = "HTTP/1.0"  # the body ends when the connection does
            self.send_response(200)
            self.end_headers()
            block = b"\0" * (1 << 16)
            while srv.sent < GUARD and self._send(block):
                pass
        elif mode in ("big", "huge"):
            length = 100 << 20 if mode == "big" else 1 << 40
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            block = b"\0" * (1 << 16)
            while srv.sent < min(length, GUARD) and self._send(block):
                pass
        elif mode in ("hold", "holdnorange"):
            start = 0
            if mode == "hold" and (rng := self.headers.get("Range", "")).startswith("bytes="):
                start = int(rng[6:].rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
            else:
                self.send_response(200)
            if mode == "hold":
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(PAYLOAD) - start))
            self.end_headers()
            if start:
                self._send(PAYLOAD[start:])
            else:
                self._send(PAYLOAD[:HALF])
                srv.release.wait(60)


@pytest.fixture
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def small(tmp_path):
    with small_fs(tmp_path / "small", 64) as folder:
        yield folder


def _env(tmp_path: Path) -> dict:
    return {"LFSPASS_CACHE": str(tmp_path / "cache"), "LFSPASS_TIMEOUT": "5,5", "LFSPASS_RETRIES": "1"}


def _gone(dest: Path) -> bool:
    return not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_endless_body_with_max_size_stops_at_the_cap(server, tmp_path):
    dest = tmp_path / "endless.iso"
    proc = run_cli("fetch", server.url("endless/endless.iso"), "--sha256", SHA, "-o", str(dest),
                   "--max-size", "64M", env=_env(tmp_path))
    assert_one_error_line(proc, "more than 67108864 bytes", "--max-size 64M", "removed")
    assert _gone(dest)
    assert server.sent < 100_000_000


def test_endless_body_without_max_size_stops_at_the_reserve(server, small, tmp_path):
    """A 64 MiB filesystem keeps 5 % (3.2 MiB) free: the stream stops there, far below the 16 GiB cap."""
    dest = small / "endless.iso"
    total = os.statvfs(small).f_blocks * os.statvfs(small).f_frsize
    proc = run_cli("fetch", server.url("endless/endless.iso"), "--sha256", SHA, "-o", str(dest), env=_env(tmp_path))
    line = assert_one_error_line(proc, f"{dest}: stopped after", "bytes written", f"{small} has",
                                 "3.2 MiB of it free", "endless.iso.part was removed")
    written = int(line.split("stopped after ")[1].split()[0])
    reserve = total * 5 // 100
    assert reserve <= total - written < reserve + (2 << 20)  # stopped at the chunk that would cross it
    assert _gone(dest) and free_bytes(small) == total  # every byte given back
    assert server.sent < 100_000_000


def test_announced_size_over_the_reserve_is_refused_before_writing(server, small, tmp_path):
    dest = small / "big.iso"
    proc = run_cli("fetch", server.url("big/big.iso"), "--sha256", SHA, "-o", str(dest), env=_env(tmp_path))
    assert_one_error_line(proc, f"{dest}: needs 100.0 MiB but {small} has", "nothing was written")
    assert _gone(dest)


def _no_writes() -> None:
    """In the child: any byte written to any file fails (EFBIG) instead of landing."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_content_length_over_the_cap_is_refused_before_any_byte(server, tmp_path):
    """Run with a file-size limit of 0: had lfspass written one byte of the body, the error would be
    'File too large', not the cap's."""
    dest = tmp_path / "huge.iso"
    env = dict(os.environ, **_env(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", "lfspass", "fetch", server.url("huge/huge.iso"), "--sha256", SHA,
                           "-o", str(dest)], cwd=REPO, env=env, capture_output=True, text=True,
                          preexec_fn=_no_writes, timeout=120)
    assert_one_error_line(proc, "announces 1099511627776 bytes (1.0 TiB)", "16.0 GiB by default", "nothing was written")
    assert _gone(dest)
    proc = subprocess.run([sys.executable, "-m", "lfspass", "fetch", server.url("huge/huge.iso"), "--sha256", SHA,
                           "-o", str(dest), "--max-size", "512M"], cwd=REPO, env=env, capture_output=True, text=True,
                          preexec_fn=_no_writes, timeout=120)
    assert_one_error_line(proc, "more than the size cap (--max-size 512M)")


_SIGINT_DEFAULT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


def _term_midway(server: Server, mode: str, dest: Path, tmp_path: Path,
                 sig: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    """Start a fetch, signal it once half the file is in DEST.part, return how it ended."""
    argv = [sys.executable, "-m", "lfspass", "fetch", server.url(f"{mode}/disk.img"), "--sha256", SHA, "-o", str(dest)]
    # The server holds the second half for 60 s: a read timeout of 30 s keeps the client waiting
    # there (a loaded machine may take seconds to see the half) instead of resuming on its own.
    env = {**os.environ, **_env(tmp_path), "LFSPASS_TIMEOUT": "5,30"}
    # SIGINT at its default, as in a terminal, then exec (same PID): a shell starting the tests with
    # `&` and no job control leaves SIGINT ignored, and Python then installs no Ctrl-C handler.
    child = subprocess.Popen([sys.executable, "-c", _SIGINT_DEFAULT, *argv], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = dest.with_name(dest.name + ".part")
    deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
    while not (part.exists() and part.stat().st_size >= HALF):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the fetch never wrote half the file: {child.communicate()}")
        time.sleep(0.02)
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


@pytest.mark.parametrize("sig, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT (Ctrl-C)")])
def test_sigterm_keeps_a_part_the_server_can_resume(server, tmp_path, sig, name):
    dest = tmp_path / "disk.img"
    proc = _term_midway(server, "hold", dest, tmp_path, sig)
    assert_one_error_line(proc, f"stopped by {name} after {HALF} bytes", f"{dest}.part is kept",
                          "the server resumes with Range", "run the same command again")
    assert proc.returncode == 128 + sig
    assert dest.with_name("disk.img.part").read_bytes() == PAYLOAD[:HALF] and not dest.exists()
    again = run_cli("fetch", server.url("hold/disk.img"), "--sha256", SHA, "-o", str(dest), "--json",
                    env=_env(tmp_path))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["downloaded_bytes"] == len(PAYLOAD) - HALF
    assert dest.read_bytes() == PAYLOAD and server.ranges == [None, f"bytes={HALF}-"]


def test_sigterm_removes_a_part_that_cannot_be_resumed(server, tmp_path):
    dest = tmp_path / "disk.img"
    proc = _term_midway(server, "holdnorange", dest, tmp_path)
    assert_one_error_line(proc, f"stopped by SIGTERM after {HALF} bytes", "disk.img.part was removed",
                          "cannot resume")
    assert proc.returncode == 128 + signal.SIGTERM
    assert _gone(dest)
    assert not [p.name for p in tmp_path.iterdir() if "disk.img" in p.name]  # no .part, no lock
