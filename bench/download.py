"""Benchmark: ``lfspass fetch`` against ``curl`` on one large file from the same local server.

Usage: python bench/download.py [--size-mib 1024] [--runs 3] [--dir DIR] [--json]

Both clients fetch the same file from the same server (busybox httpd, which sends with
sendfile, so the server is not the bottleneck), alternating, each writing a fresh file in
the same folder.  curl only writes; lfspass also hashes (sha256) in the same pass, fsyncs
and verifies before moving the file into place.  Wall time includes process start-up.
Peak memory is the child's ru_maxrss from wait4.  Page-cache writeback makes single runs
noisy, so both best and median are shown.  Goals: ratio >= 0.9, peak <= 64 MiB.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_payload(path: Path, mib: int) -> str:
    """Random bytes (nothing compressible or sparse to flatter either client); return sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("busybox missing: apt-get install busybox-static")
    port = free_port()
    proc = subprocess.Popen([busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(root)])
    url = f"http://127.0.0.1:{port}/payload.bin"
    for _ in range(100):  # wait until it answers
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("busybox httpd did not start")


def timed(argv: list[str], env: dict | None = None) -> tuple[float, int, float]:
    """Run argv; return (wall seconds, peak RSS in bytes, CPU seconds) of that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed with exit {proc.returncode}: {' '.join(argv)}")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime  # Linux: maxrss in KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="work folder (default: a temp folder, removed after)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    curl = shutil.which("curl") or sys.exit("curl missing: apt-get install curl")
    work = Path(tempfile.mkdtemp(prefix="lfspass-bench-", dir=args.dir))
    server = None
    try:
        (work / "www").mkdir()
        sha = make_payload(work / "www" / "payload.bin", args.size_mib)
        server, url = start_server(work / "www")
        size = args.size_mib << 20
        timed([curl, "-sf", "-o", "/dev/null", url])  # warm the page cache for both
        load_before = round(os.getloadavg()[0], 2)
        results: dict[str, list[tuple[float, int, float]]] = {"curl": [], "lfspass": []}
        for i in range(args.runs):
            for name in ("curl", "lfspass"):  # alternate so drift hits both alike
                dest = work / f"{name}-{i}.bin"
                if name == "curl":
                    results[name].append(timed([curl, "-sf", "-o", str(dest), url]))
                else:
                    env = dict(os.environ, LFSPASS_CACHE=str(work / f"cache-{i}"))
                    results[name].append(timed(
                        [sys.executable, "-m", "lfspass", "fetch", url, "--sha256", sha,
                         "-o", str(dest), "--no-progress"], env=env))
                    if dest.stat().st_size != size:
                        sys.exit("lfspass wrote a file of the wrong size")
                dest.unlink()
                shutil.rmtree(work / f"cache-{i}", ignore_errors=True)
        best = {n: min(w for w, _, _ in r) for n, r in results.items()}
        median = {n: statistics.median(w for w, _, _ in r) for n, r in results.items()}
        peak = {n: max(m for _, m, _ in r) for n, r in results.items()}
        cpu = {n: statistics.median(c for _, _, c in r) for n, r in results.items()}
        mibps = {n: args.size_mib / best[n] for n in best}
        report = {
            "size_mib": args.size_mib, "runs": args.runs, "server": "busybox httpd (sendfile)",
            "curl_mib_s": round(mibps["curl"], 1), "lfspass_mib_s": round(mibps["lfspass"], 1),
            "ratio": round(mibps["lfspass"] / mibps["curl"], 3),
            "median_ratio": round(median["curl"] / median["lfspass"], 3),
            "lfspass_peak_rss_mib": round(peak["lfspass"] / (1 << 20), 1),
            "curl_peak_rss_mib": round(peak["curl"] / (1 << 20), 1),
            "cpu_s_median": {n: round(c, 2) for n, c in cpu.items()},
            "all_runs_s": {n: [round(w, 3) for w, _, _ in r] for n, r in results.items()},
            "load_avg_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
            "cpus": os.cpu_count(),
        }
        if args.json:
            json.dump(report, sys.stdout, indent=2)
            print()
        else:
            print(f"{args.size_mib} MiB from {report['server']}, best of {args.runs}:")
            print(f"  curl     {report['curl_mib_s']:8.1f} MiB/s  peak {report['curl_peak_rss_mib']:.1f} MiB")
            print(f"  lfspass  {report['lfspass_mib_s']:8.1f} MiB/s  peak {report['lfspass_peak_rss_mib']:.1f} MiB"
                  "  (sha256 in the same pass)")
            print(f"  ratio    {report['ratio']:.3f}x curl best-to-best, {report['median_ratio']:.3f}x median-to-median"
                  " (goal >= 0.9); lfspass peak memory goal <= 64 MiB")
            print(f"  runs (s) {report['all_runs_s']}; CPU s (median) {report['cpu_s_median']}")
            print(f"  {report['cpus']} CPUs, 1-min load {report['load_avg_1m']['before']} -> "
                  f"{report['load_avg_1m']['after']} (lfspass hashes on a second core: a busy host costs it more)")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
