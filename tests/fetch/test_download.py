"""Downloads against a real HTTP server on 127.0.0.1: resume, checksums, signatures, faults, cache."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, run_cli
from lfspass.fetch.download import fetch
from lfspass.errors import DownloadError
from lfspass.fetch.signature import DEBIAN_CD_FINGERPRINT, DEBIAN_CD_KEYRING, parse_sums, verify_detached

DATA = Path(__file__).resolve().parent / "data"
PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a few chunks, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()
CUT_AT = (1 << 20) + 777


class Server(ThreadingHTTPServer):
    """Serves ``files`` with Range support; the first path segment picks a fault mode."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.served: dict[str, int] = {}  # body bytes written, per file name
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_done: set[str] = set()
        self.release = threading.Event()  # ends stalled handlers at teardown
        self.halfway = threading.Event()  # a "slow" answer has sent half its body and waits for `resume`
        self.resume = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def handle_error(self, request, client_address) -> None:
        pass  # a client hanging up mid-answer is what these tests do on purpose


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        mode, _, name = self.path.lstrip("/").partition("/")
        if mode == "500":
            return self._plain(500, b"boom")
        body = srv.files.get(name)
        if mode == "moved":  # mirrors redirect (cdimage.debian.org does)
            self.send_response(302)
            self.send_header("Location", f"/data/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "stallhead":
            srv.release.wait(30)  # say nothing at all, not even headers
            return
        if body is None or mode not in ("data", "cut", "stall", "norange", "wrongrange", "slow"):
            return self._plain(404, b"not here")
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and mode == "wrongrange":  # a broken proxy: 206, but for the whole file
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
        elif m and mode != "norange":
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        end = len(body)
        if mode == "cut" and name not in srv.cut_done:
            srv.cut_done.add(name)
            end = start + CUT_AT  # promise the whole file, send part of it, hang up
        if mode == "stall":  # the first answer trickles 1000 bytes, later ones none, then all hang
            end = start + (0 if name in srv.cut_done else 1000)
            srv.cut_done.add(name)
        if mode == "slow":  # half the body, then it waits until the test says go on (or teardown)
            half = start + (end - start) // 2
            self.wfile.write(body[start:half])
            self.wfile.flush()
            srv.halfway.set()
            srv.resume.wait(120)
            self.wfile.write(body[half:end])
            self.wfile.flush()
        else:
            self.wfile.write(body[start:end])
            self.wfile.flush()
        srv.served[name] = srv.served.get(name, 0) + end - start
        if mode == "stall":
            srv.release.wait(30)
        self.close_connection = True
        if mode == "cut":
            self.connection.shutdown(2)

    def _plain(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = Server()
    srv.files["disk.img"] = PAYLOAD
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.resume.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def fetch_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return run_cli("fetch", *args, env={"LFSPASS_CACHE": str(cache), "LFSPASS_RETRIES": "1",
                                        "LFSPASS_TIMEOUT": "5,2"})


def no_leftovers(dest: Path) -> None:
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


# -- sha256 -----------------------------------------------------------------------------------

def test_fetch_verifies_and_reports(server, tmp_path, cache):
    dest = tmp_path / "out" / "disk.img"
    proc = fetch_cli(server.url("data/disk.img"), "--sha256", SHA, "-o", str(dest), cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == PAYLOAD
    assert SHA in proc.stdout
    assert proc.stderr == ""  # not a terminal: no progress line
    assert not dest.with_name("disk.img.part").exists()


def test_two_fetches_of_one_file_take_turns(server, tmp_path, cache):
    """A second fetch to the same -o while the first runs waits and reuses its file."""
    dest = tmp_path / "out" / "disk.img"
    argv = [sys.executable, "-m", "lfspass", "fetch", server.url("slow/disk.img"), "--sha256", SHA,
            "-o", str(dest)]
    env = dict(os.environ, LFSPASS_CACHE=str(cache), LFSPASS_RETRIES="1", LFSPASS_TIMEOUT="5,5")
    first = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The first is half way through the body (the server holds the rest back) before the second starts,
    # and the rest comes only once the second has said it waits: no timing decides the order.
    while not server.halfway.wait(0.5):
        first.poll() is None or pytest.fail("the first fetch ended before it had half the file: " + first.stderr.read())
    second = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    for line in second.stderr:           # ends when the second exits; it waits, so the line comes first
        said.append(line)
        if "another lfspass fetch is writing it; waiting" in line:
            break
    server.resume.set()
    _out, err = first.communicate(timeout=120)
    _out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err + "".join(said) + err2
    assert dest.read_bytes() == PAYLOAD
    assert any("another lfspass fetch is writing it; waiting" in line for line in said), "".join(said) + err2
    assert [p for p, _ in server.requests] == ["/slow/disk.img"]  # downloaded once, never resumed into
    assert sorted(x.name for x in dest.parent.iterdir()) == ["disk.img"]  # no .part, no .lock


def test_lock_that_cannot_be_made(server, tmp_path, cache):
    """No lock file possible (here a folder in its place): a verified file is still accepted,
    a missing one is an error that names the lock and writes nothing."""
    dest = tmp_path / "disk.img"
    (tmp_path / ".disk.img.lock").mkdir()
    proc = fetch_cli(server.url("data/disk.img"), "--sha256", SHA, "-o", str(dest), cache=cache)
    assert_one_error_line(proc, ".disk.img.lock", "choose another -o")
    no_leftovers(dest)
    dest.write_bytes(PAYLOAD)
    proc = fetch_cli(server.url("data/disk.img"), "--sha256", SHA, "-o", str(dest), cache=cache)
    assert proc.returncode == 0 and dest.read_bytes() == PAYLOAD, proc.stderr
    assert [p for p, _ in server.requests] == []  # never downloaded


def test_wrong_sha256_leaves_nothing(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    wrong = "0" * 64
    proc = fetch_cli(server.url("data/disk.img"), "--sha256", wrong, "-o", str(dest), cache=cache)
    assert_one_error_line(proc, "sha256 mismatch", wrong, SHA, "deleted")
    no_leftovers(dest)
    assert not (cache / "sha256" / wrong).exists()


def test_unverified_download_refused(server, tmp_path, cache):
    proc = fetch_cli(server.url("data/disk.img"), "-o", str(tmp_path / "x"), cache=cache)
    assert_one_error_line(proc, "--sha256", "--sums")
    assert server.requests == []


def test_malformed_sha256_refused(server, tmp_path, cache):
    proc = fetch_cli(server.url("data/disk.img"), "--sha256", "abc", "-o", str(tmp_path / "x"), cache=cache)
    assert_one_error_line(proc, "'abc'", "64 hex")


# -- resume -----------------------------------------------------------------------------------

def test_cut_connection_resumes_and_fetches_only_the_rest(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    res = fetch(server.url("cut/disk.img"), dest, sha256=SHA, cache_dir=cache, retries=1)
    assert dest.read_bytes() == PAYLOAD and res.sha256 == SHA
    assert res.resumed
    ranges = [r for _, r in server.requests]
    assert ranges == [None, f"bytes={CUT_AT}-"]
    assert server.served["disk.img"] == len(PAYLOAD)  # nothing fetched twice


def test_part_from_an_interrupted_run_is_continued(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    dest.with_name("disk.img.part").write_bytes(PAYLOAD[:CUT_AT])  # what a killed run leaves
    proc = fetch_cli(server.url("data/disk.img"), "--sha256", SHA, "-o", str(dest), "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert f'"downloaded_bytes": {len(PAYLOAD) - CUT_AT}' in proc.stdout
    assert '"resumed": true' in proc.stdout
    assert dest.read_bytes() == PAYLOAD
    assert server.served["disk.img"] == len(PAYLOAD) - CUT_AT


def test_redirect_is_followed_and_resume_survives_it(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    dest.with_name("disk.img.part").write_bytes(PAYLOAD[:CUT_AT])
    res = fetch(server.url("moved/disk.img"), dest, sha256=SHA, cache_dir=cache, retries=0)
    assert dest.read_bytes() == PAYLOAD and res.resumed
    assert server.requests == [("/moved/disk.img", f"bytes={CUT_AT}-"), ("/data/disk.img", f"bytes={CUT_AT}-")]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    dest.with_name("disk.img.part").write_bytes(PAYLOAD[:CUT_AT])
    res = fetch(server.url("norange/disk.img"), dest, sha256=SHA, cache_dir=cache)
    assert dest.read_bytes() == PAYLOAD  # not the old part with the whole file appended
    assert res.downloaded_bytes == len(PAYLOAD) and not res.resumed


def test_server_answering_another_range_restarts_cleanly(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    dest.with_name("disk.img.part").write_bytes(PAYLOAD[:CUT_AT])
    res = fetch(server.url("wrongrange/disk.img"), dest, sha256=SHA, cache_dir=cache)
    assert dest.read_bytes() == PAYLOAD and not res.resumed
    assert [r for _, r in server.requests] == [f"bytes={CUT_AT}-", None]


def test_corrupt_part_is_deleted_then_next_run_succeeds(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    dest.with_name("disk.img.part").write_bytes(b"x" * CUT_AT)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(server.url("data/disk.img"), dest, sha256=SHA, cache_dir=cache)
    no_leftovers(dest)
    fetch(server.url("data/disk.img"), dest, sha256=SHA, cache_dir=cache)
    assert dest.read_bytes() == PAYLOAD


def test_part_longer_than_file_restarts(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    dest.with_name("disk.img.part").write_bytes(PAYLOAD + b"junk")
    res = fetch(server.url("data/disk.img"), dest, sha256=SHA, cache_dir=cache)
    assert dest.read_bytes() == PAYLOAD and res.downloaded_bytes == len(PAYLOAD)


# -- server faults -----------------------------------------------------------------------------

def test_404_names_url_and_status(server, tmp_path, cache):
    dest = tmp_path / "gone.iso"
    url = server.url("data/gone.iso")
    proc = fetch_cli(url, "--sha256", SHA, "-o", str(dest), cache=cache)
    assert_one_error_line(proc, url, "404")
    no_leftovers(dest)


def test_500_is_retried_then_reported(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    url = server.url("500/disk.img")
    proc = fetch_cli(url, "--sha256", SHA, "-o", str(dest), cache=cache)
    assert_one_error_line(proc, url, "500")
    assert len(server.requests) == 2  # LFSPASS_RETRIES=1: urllib3's Retry asked once more
    no_leftovers(dest)


def test_server_stalling_mid_body_times_out(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    with pytest.raises(DownloadError, match="timed out") as err:
        fetch(server.url("stall/disk.img"), dest, sha256=SHA, cache_dir=cache, timeout=(5, 1.0), retries=1)
    assert "run again to resume" in str(err.value)
    assert not dest.exists()
    # After the first stall it resumes where it stopped; two fruitless tries later it gives up.
    assert [r for _, r in server.requests] == [None, "bytes=1000-", "bytes=1000-"]
    assert dest.with_name("disk.img.part").stat().st_size == 1000  # kept for the next run


def test_server_stalling_before_headers_times_out(server, tmp_path, cache):
    dest = tmp_path / "disk.img"
    url = server.url("stallhead/disk.img")
    proc = run_cli("fetch", url, "--sha256", SHA, "-o", str(dest),
                   env={"LFSPASS_CACHE": str(cache), "LFSPASS_RETRIES": "1", "LFSPASS_TIMEOUT": "5,0.5"})
    assert_one_error_line(proc, url, "timed out")
    assert len(server.requests) == 2  # urllib3's Retry read once more
    no_leftovers(dest)


# -- cache and local sources ---------------------------------------------------------------------

def test_cache_hit_downloads_nothing(server, tmp_path, cache):
    first = fetch(server.url("data/disk.img"), tmp_path / "a" / "disk.img", sha256=SHA, cache_dir=cache)
    served = server.served["disk.img"]
    second = fetch(server.url("data/disk.img"), tmp_path / "b" / "other.img", sha256=SHA, cache_dir=cache)
    assert not first.from_cache and second.from_cache
    assert second.downloaded_bytes == 0 and server.served["disk.img"] == served
    assert (tmp_path / "b" / "other.img").read_bytes() == PAYLOAD
    assert (cache / "sha256" / SHA).is_file()


def test_damaged_cache_entry_is_fetched_again(server, tmp_path, cache):
    fetch(server.url("data/disk.img"), tmp_path / "a.img", sha256=SHA, cache_dir=cache)
    entry = cache / "sha256" / SHA
    entry.unlink()
    entry.write_bytes(b"bit rot")
    res = fetch(server.url("data/disk.img"), tmp_path / "b.img", sha256=SHA, cache_dir=cache)
    assert not res.from_cache and (tmp_path / "b.img").read_bytes() == PAYLOAD
    assert entry.read_bytes() == PAYLOAD


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_local_file_source_is_verified(tmp_path, cache, form):
    src = tmp_path / "offline" / "disk.img"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    url = str(src) if form == "path" else src.as_uri()
    dest = tmp_path / "disk.img"
    proc = fetch_cli(url, "--sha256", SHA, "-o", str(dest), cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == PAYLOAD
    bad = fetch_cli(url, "--sha256", "f" * 64, "-o", str(tmp_path / "bad.img"), cache=cache)
    assert_one_error_line(bad, "sha256 mismatch")
    no_leftovers(tmp_path / "bad.img")


def test_progress_line_only_on_a_terminal(server, tmp_path, cache):
    import pty

    leader, follower = pty.openpty()
    env = dict(os.environ, LFSPASS_CACHE=str(cache))
    proc = subprocess.Popen([sys.executable, "-m", "lfspass", "fetch", server.url("data/disk.img"),
                             "--sha256", SHA, "-o", str(tmp_path / "disk.img")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait() == 0
    os.close(leader)
    assert b"\r" in out and b"100%" in out and b"MiB/s" in out
    assert out.count(b"\n") == 1  # one line, rewritten in place


# -- signed SHA256SUMS ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    """A throwaway OpenPGP key (not Debian's) in its own GNUPGHOME, exported as a keyring."""
    gpg = shutil.which("gpg")
    if gpg is None:
        pytest.fail("gpg missing: apt-get install gnupg (see .ci/run)")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    base = [gpg, "--batch", "--quiet", "--homedir", str(home), "--passphrase", "", "--pinentry-mode", "loopback"]
    subprocess.run([*base, "--quick-gen-key", "lfspass test <test@example.invalid>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    keyring = home / "pub.gpg"
    keyring.write_bytes(subprocess.run([*base, "--export"], check=True, capture_output=True).stdout)
    colons = subprocess.run([*base, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True).stdout
    fpr = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))

    def sign(data: bytes) -> bytes:
        return subprocess.run([*base, "--armor", "--detach-sign"], input=data, check=True, capture_output=True).stdout

    yield type("Signer", (), {"keyring": keyring, "fpr": fpr, "sign": staticmethod(sign)})
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


def publish_sums(server: Server, signer, text: str, signed_text: str | None = None) -> str:
    """Serve SHA256SUMS (+ .sign over ``signed_text``, default the same text); return its URL."""
    server.files["SHA256SUMS"] = text.encode()
    server.files["SHA256SUMS.sign"] = signer.sign((signed_text or text).encode())
    return server.url("data/SHA256SUMS")


SUMS = f"{'1' * 64}  ./debian-12.8.0-amd64-netinst.iso\n{SHA}  ./disk.img\n"


def test_foreign_signature_rejected_by_debian_keyring(server, signer, tmp_path, cache):
    dest = tmp_path / "disk.img"
    sums = publish_sums(server, signer, SUMS)
    proc = fetch_cli(server.url("data/disk.img"), "--sums", sums, "-o", str(dest), cache=cache)
    assert_one_error_line(proc, "signature does not verify", str(DEBIAN_CD_KEYRING))
    no_leftovers(dest)
    assert "disk.img" not in server.served  # the sum was never trusted, the file never fetched


def test_same_signature_accepted_with_its_keyring(server, signer, tmp_path, cache):
    dest = tmp_path / "disk.img"
    sums = publish_sums(server, signer, SUMS)
    proc = fetch_cli(server.url("data/disk.img"), "--sums", sums, "--keyring", str(signer.keyring),
                     "--fingerprint", signer.fpr, "-o", str(dest), cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == PAYLOAD


def test_signature_by_another_key_than_pinned_is_rejected(server, signer, tmp_path, cache):
    dest = tmp_path / "disk.img"
    sums = publish_sums(server, signer, SUMS)
    proc = fetch_cli(server.url("data/disk.img"), "--sums", sums, "--keyring", str(signer.keyring),
                     "--fingerprint", DEBIAN_CD_FINGERPRINT, "-o", str(dest), cache=cache)
    assert_one_error_line(proc, signer.fpr, DEBIAN_CD_FINGERPRINT)
    no_leftovers(dest)


def test_tampered_sums_rejected(server, signer, tmp_path, cache):
    dest = tmp_path / "disk.img"
    sums = publish_sums(server, signer, SUMS.replace(SHA, "2" * 64), signed_text=SUMS)
    proc = fetch_cli(server.url("data/disk.img"), "--sums", sums, "--keyring", str(signer.keyring),
                     "-o", str(dest), cache=cache)
    assert_one_error_line(proc, "signature does not verify", "BAD signature")
    no_leftovers(dest)


def test_sums_without_the_file_is_an_error(server, signer, tmp_path, cache):
    sums = publish_sums(server, signer, f"{'1' * 64}  other.iso\n")
    proc = fetch_cli(server.url("data/disk.img"), "--sums", sums, "--keyring", str(signer.keyring),
                     "-o", str(tmp_path / "disk.img"), cache=cache)
    assert_one_error_line(proc, "no file named 'disk.img'", "other.iso")


def test_offline_host_with_local_sums_signature_and_image(signer, tmp_path, cache):
    media = tmp_path / "media"
    media.mkdir()
    (media / "disk.img").write_bytes(PAYLOAD)
    (media / "SHA256SUMS").write_text(SUMS)
    (media / "SHA256SUMS.asc").write_bytes(signer.sign(SUMS.encode()))
    res = fetch(str(media / "disk.img"), tmp_path / "out.img", sums_url=str(media / "SHA256SUMS"),
                signature_url=(media / "SHA256SUMS.asc").as_uri(), keyring=signer.keyring, cache_dir=cache)
    assert res.sha256 == SHA and (tmp_path / "out.img").read_bytes() == PAYLOAD


def test_missing_gpgv_is_named(server, signer, tmp_path, cache):
    sums = publish_sums(server, signer, SUMS)
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run_cli("fetch", server.url("data/disk.img"), "--sums", sums, "-o", str(tmp_path / "x"),
                   env={"PATH": str(empty), "LFSPASS_CACHE": str(cache)})
    assert_one_error_line(proc, "'gpgv' not found", "apt-get install gpgv")


def test_parse_sums_forms():
    text = f"{'a' * 64}  ./main/disk.img\n{'b' * 64} *other.iso\n{'c' * 64}  ./alt/disk.img\n# comment\n"
    assert parse_sums(text, "other.iso") == "b" * 64
    assert parse_sums(text, "./main/disk.img") == "a" * 64
    with pytest.raises(DownloadError, match="2 different sums"):
        parse_sums(text, "disk.img")
    assert parse_sums(text.upper().replace("./MAIN/DISK.IMG", "./main/disk.img"), "main/disk.img") == "a" * 64


# -- the real Debian keys --------------------------------------------------------------------------

ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def split_clearsigned(path: Path, out: Path) -> tuple[Path, Path]:
    """A clearsigned file as (text, detached signature), as gpg canonicalizes it (RFC 4880 §7.1)."""
    text = path.read_text()
    body, sig = text.split("\n\n", 1)[1].split("\n-----BEGIN PGP SIGNATURE-----", 1)
    lines = [line[2:] if line.startswith("- ") else line for line in body.split("\n")]
    data, detached = out / "Release", out / "Release.gpg"
    data.write_bytes("\r\n".join(line.rstrip(" \t") for line in lines).encode())
    detached.write_text("-----BEGIN PGP SIGNATURE-----" + sig)
    return data, detached


def test_real_debian_signature_verifies_and_tampering_is_caught(tmp_path):
    # A recorded InRelease from deb.debian.org, signed by Debian's archive keys.
    data, sig = split_clearsigned(DATA / "bookworm-security_InRelease", tmp_path)
    signer = verify_detached(data, sig, ARCHIVE_KEYRING)
    keys = subprocess.run(["gpg", "--homedir", str(tmp_path), "--with-colons", "--show-keys", str(ARCHIVE_KEYRING)],
                          capture_output=True, text=True, check=True).stdout
    assert f":{signer}:" in keys
    with pytest.raises(DownloadError, match="not by the expected key"):
        verify_detached(data, sig, ARCHIVE_KEYRING, DEBIAN_CD_FINGERPRINT)
    with pytest.raises(DownloadError, match="does not verify"):
        verify_detached(data, sig)  # an archive key is not the CD signing key
    data.write_bytes(data.read_bytes().replace(b"bookworm", b"bookwurm", 1))
    with pytest.raises(DownloadError, match="BAD signature"):
        verify_detached(data, sig, ARCHIVE_KEYRING)


def test_default_keyring_holds_the_debian_cd_signing_key(tmp_path):
    keys = subprocess.run(["gpg", "--homedir", str(tmp_path), "--with-colons", "--show-keys", str(DEBIAN_CD_KEYRING)],
                          capture_output=True, text=True, check=True).stdout
    assert f"fpr:::::::::{DEBIAN_CD_FINGERPRINT}:" in keys
