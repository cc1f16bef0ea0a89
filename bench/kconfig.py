"""Time lfspass's configure step against the kernel's own `make olddefconfig`, side by side."""
from __future__ import annotations

import argparse
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TREE = REPO / "build" / "test-cache" / "linux-source-6.1"
DEFAULT_CONFIG = Path("/usr/src/linux-config-6.1/config.amd64_none_amd64.xz")
GOAL = 1.5


def _timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tree", type=Path, default=DEFAULT_TREE, help="kernel source tree")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="starting .config (.xz ok)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per warm measurement (median)")
    args = ap.parse_args()
    if not (args.tree / "Kconfig").is_file():
        sys.exit(f"error: {args.tree}: not a kernel tree; run `pytest tests/kernel/kconfig/test_configure.py` once "
                 "(it extracts linux-source-6.1 there) or pass --tree")
    opener = lzma.open if args.config.suffix == ".xz" else open
    with opener(args.config, "rb") as fh:
        start_bytes = fh.read()
    sets = ["--set", "INTEL_IOMMU=y", "--set", "IRQ_REMAP=y", "--set", "VFIO=m", "--set", "VFIO_PCI=m"]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="lfspass-bench-") as tmp_name:
        tmp = Path(tmp_name)
        obj = tmp / "obj"
        obj.mkdir()
        make = ["make", "-s", f"O={obj}", "olddefconfig"]  # no ARCH: as the build and lfspass run it

        def fresh_make() -> None:
            (obj / ".config").write_bytes(start_bytes)

        fresh_make()
        rows.append(("make olddefconfig, cold (builds scripts/kconfig/conf)", _timed(make, args.tree)))
        cfg = tmp / "config"
        cli = [sys.executable, "-m", "lfspass", "kconfig", "--tree", str(args.tree), "--config", str(cfg)]
        stamp = tmp / ".config.lfspass-kconfig"

        def fresh_lfspass() -> None:
            cfg.write_bytes(start_bytes)
            stamp.unlink(missing_ok=True)

        # Interleaved, so load from other processes hits both sides alike.
        warm, firsts, firsts_req = [], [], []
        for _ in range(args.repeat):
            fresh_make()
            warm.append(_timed(make, args.tree))
            fresh_lfspass()
            firsts.append(_timed(cli, REPO))
            fresh_lfspass()
            firsts_req.append(_timed(cli + sets, REPO))
        make_warm, first = statistics.median(warm), statistics.median(firsts)
        rows.append(("make olddefconfig, warm (conf already built)", make_warm))
        rows.append(("lfspass kconfig, first run (the tree's conf + verification, no --set)", first))
        rows.append(("lfspass kconfig, first run with 4 --set requests", statistics.median(firsts_req)))
        _timed(cli + sets, REPO)  # leaves the stamp of exactly these inputs
        rows.append(("lfspass kconfig, nothing changed (stamp matches)", _timed(cli + sets, REPO)))
        stamp.unlink(missing_ok=True)
        rows.append(("lfspass kconfig, nothing changed (no stamp: conf runs again)", _timed(cli + sets, REPO)))
        refused = [*cli, "--set", "VFIO_PLATFORM=m"]
        start = time.perf_counter()
        subprocess.run(refused, cwd=REPO, capture_output=True)
        rows.append(("lfspass kconfig, a refusal explained (kconfiglib parses the tree)",
                     time.perf_counter() - start))
        same = cfg.read_bytes() == _after_make(obj, start_bytes, make, args.tree, cfg)

    print(f"tree {args.tree}  config {args.config}  (median of {args.repeat} where repeated)")
    for label, secs in rows:
        print(f"  {secs:7.2f} s  {label}")
    # A fresh build folder must compile conf first, so "cold" is what a first build pays;
    # "warm" is the stricter comparison.  The ratios move with machine load.
    for label, ref in (("warm", make_warm), ("cold", rows[0][1])):
        ratio = first / ref
        verdict = "meets" if ratio <= GOAL else "misses"
        print(f"ratio first lfspass run / {label} make olddefconfig: {ratio:.2f}x "
              f"({verdict} the {GOAL}x goal)")
    print(f"make olddefconfig leaves lfspass's output unchanged: {'yes' if same else 'NO'}")
    _graph_figure(args.repeat)
    return 0 if same else 1


def _graph_figure(repeat: int) -> None:
    """Wall time of a nothing-changed `doit kernel grub vfio` on the lab recipe (goal <= 0.5 s)."""
    doit = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "recipe=recipes/lab.toml"]
    status = subprocess.run(doit[:-1] + ["list", "--all", "--status", "recipe=recipes/lab.toml"],
                            cwd=REPO, capture_output=True, text=True).stdout.split("\n")
    states = {parts[1]: parts[0] for parts in (line.split() for line in status) if len(parts) > 1}
    needed = ("kernel:config", "kernel:build", "kernel:install", "grub", "vfio")
    if any(states.get(name) != "U" for name in needed):
        print("nothing-changed `doit kernel grub vfio`: skipped (run `doit` once so the lab is built)")
        return
    took = statistics.median(_timed(doit + ["kernel", "grub", "vfio"], REPO) for _ in range(repeat))
    print(f"nothing-changed `doit kernel grub vfio` (lab recipe): {took:.2f} s "
          f"({'meets' if took <= 0.5 else 'misses'} the 0.5 s goal)")


def _after_make(obj: Path, _start: bytes, make: list[str], tree: Path, cfg: Path) -> bytes:
    """Run make olddefconfig over lfspass's output; its result must be the same bytes."""
    shutil.copyfile(cfg, obj / ".config")
    _timed(make, tree)
    return (obj / ".config").read_bytes()


if __name__ == "__main__":
    sys.exit(main())
