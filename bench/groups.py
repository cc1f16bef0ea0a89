#!/usr/bin/env python3
"""Time `lfspass groups` against the seed's shell loop (one `lspci -nns` per device) on a big fixture.

Usage: python bench/groups.py [--runs N] [--sockets S --slots P]
The fixture (tests/make_fixtures.py, "bench" host: 4 sockets x 30 root ports with
two-function cards = 364 devices) is built in a temporary folder and removed after.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

# The seed's loop, verbatim but for the sysfs location (lspci reads the fixture through -O sysfs.path).
SEED_LOOP = r'''
for g in `find "$ROOT"/sys/kernel/iommu_groups/* -maxdepth 0 -type d | sort -V`; do
    echo "IOMMU Group ${g##*/}:"
    for d in $g/devices/*; do
        echo -e "\t$(lspci -O sysfs.path="$ROOT"/sys/bus/pci -O hwdb.disable=1 -nns ${d##*/} 2>/dev/null)"
    done;
done;
'''


def best_of(runs: int, argv: list[str], env: dict | None = None) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
        times.append(time.perf_counter() - t0)
        out = proc.stdout
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="repetitions; the best time counts")
    ap.add_argument("--sockets", type=int, default=4)
    ap.add_argument("--slots", type=int, default=30)
    args = ap.parse_args()
    if not shutil.which("lspci"):
        sys.exit("error: lspci not found: apt-get install pciutils")
    from fixture_data import bench_host
    from make_fixtures import write_root

    with tempfile.TemporaryDirectory(prefix="lfspass-bench-") as tmp:
        root = write_root(Path(tmp) / "host", **bench_host(args.sockets, args.slots))
        devices = len(os.listdir(root / "sys/bus/pci/devices"))
        groups = len(os.listdir(root / "sys/kernel/iommu_groups"))
        env = dict(os.environ, ROOT=str(root))
        t_shell, out_shell = best_of(args.runs, ["bash", "-c", SEED_LOOP], env)
        t_ours, out_ours = best_of(args.runs, [sys.executable, "-m", "lfspass", "groups", "--host-root", str(root)])
        t_json, _ = best_of(args.runs, [sys.executable, "-m", "lfspass", "groups", "--host-root", str(root), "--json"])
    lspci_calls = out_shell.count("\t")
    print(f"fixture: {devices} PCI devices in {groups} IOMMU groups; best of {args.runs} runs")
    print(f"{'seed shell loop (find + lspci -nns per device)':<48} {t_shell:8.3f} s  ({lspci_calls} lspci runs)")
    print(f"{'lfspass groups':<48} {t_ours:8.3f} s  (one process, viability included)")
    print(f"{'lfspass groups --json':<48} {t_json:8.3f} s")
    print(f"ratio shell / lfspass: {t_shell / t_ours:.1f}x")
    assert out_ours.count("IOMMU group") == groups == out_shell.count("IOMMU Group")
    return 0


if __name__ == "__main__":
    sys.exit(main())
