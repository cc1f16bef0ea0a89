"""The preseed server: one file over HTTP on a 0600 Unix socket that only the guest's guestfwd relay reaches."""
from __future__ import annotations

import http.server
import os
import shutil
import socketserver
import sys
import tempfile
import threading
from pathlib import Path

# QEMU runs this once per guest connection (guestfwd ... -cmd:), stdin/stdout being the
# guest's TCP stream.  It talks to the server over the Unix socket, so no TCP port on
# 127.0.0.1 answers other local users, and no secret shows up in QEMU's command line.
RELAY = '''#!{python}
"""guestfwd relay for one connection: stdin/stdout <-> the preseed server's socket (written by lfspass)."""
import socket, sys, threading
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({sock!r})
def up():
    while data := sys.stdin.buffer.read1(65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    sys.stdout.buffer.write(data); sys.stdout.buffer.flush()
'''
SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes with the NUL; leave room


class PreseedServer(socketserver.ThreadingUnixStreamServer):
    """Serves one preseed at /preseed.cfg on a Unix socket in ``folder`` and remembers every request line.

    The socket is 0600 inside a 0700 folder; a folder path too long for a socket address
    gets a private 0700 folder from mkdtemp instead.  ``stop`` removes both.
    """

    daemon_threads = True

    def __init__(self, text: str, folder: Path) -> None:
        self.body = text.encode()
        self.requests: list[str] = []
        self.own_dir: Path | None = None
        path = folder / "preseed.sock"
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            self.own_dir = Path(tempfile.mkdtemp(prefix="lfspass-preseed-"))
            path = self.own_dir / "preseed.sock"
        path.unlink(missing_ok=True)
        self.path = path
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(f"GET {self.path}")
                ok = self.path.split("?")[0] == "/preseed.cfg"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(outer.body) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(outer.body)

            def address_string(self) -> str:
                return "guest"  # a Unix socket peer has no address

            def log_message(self, *args: object) -> None:
                pass  # requests are kept in .requests, not printed over the progress lines

        super().__init__(str(path), Handler)
        os.chmod(path, 0o600)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def relay_text(self) -> str:
        return RELAY.format(python=sys.executable, sock=str(self.path))

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)
        if self.own_dir is not None:
            shutil.rmtree(self.own_dir, ignore_errors=True)
