"""Time lfspass's first configure against the kernel's own `make olddefconfig`, side by side.

Both get the same input (a Debian config plus four requests) on the same tree, cold (a new
build folder: conf is compiled first; lfspass also has no cache of the tree's Kconfig files)
and warm (conf already built), interleaved so that load from other programs hits both alike.
The default trees are Debian's 6.1 (Debian's 6.1 config) and the newest one the tests fetched
from sid (Debian's 6.12 config carried into it, the upgrade case).
"""
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
CACHE = REPO / "build" / "test-cache"
CONFIG_61 = Path("/usr/src/linux-config-6.1/config.amd64_none_amd64.xz")
CONFIG_612 = Path("/usr/src/linux-config-6.12/config.amd64_none_amd64.xz")
REQUESTS = {"INTEL_IOMMU": "y", "IRQ_REMAP": "y", "VFIO": "m", "VFIO_PCI": "m"}
GOALS = {"6.1": 1.1, "newest": 1.0}   # first lfspass configure / make olddefconfig, cold and warm


def _timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return took


def _read(config: Path) -> bytes:
    opener = lzma.open if config.suffix == ".xz" else open
    with opener(config, "rb") as fh:
        return fh.read()


class Side:
    """One tree and starting config, each tool run in fresh or kept folders below ``tmp``."""

    def __init__(self, tree: Path, start: bytes, tmp: Path) -> None:
        self.tree, self.start, self.tmp, self.n = tree, start, tmp, 0
        self.make_obj = tmp / "make-warm"
        self.cache = tmp / "cache-warm"

    def make(self, cold: bool) -> float:
        self.n += 1
        obj = self.tmp / f"make-cold-{self.n}" if cold else self.make_obj
        obj.mkdir(exist_ok=True)
        lines = "".join(f"CONFIG_{k}={v}\n" for k, v in REQUESTS.items())
        (obj / ".config").write_bytes(self.start + b"\n" + lines.encode())
        took = _timed(["make", "-s", f"O={obj}", "olddefconfig"], self.tree)  # no ARCH: as the build runs it
        if cold:
            shutil.rmtree(obj)
        return took

    def lfspass(self, cold: bool, sets: bool = True) -> float:
        self.n += 1
        cache = self.tmp / f"cache-cold-{self.n}" if cold else self.cache
        cfg = self.tmp / "lfspass.config"
        cfg.write_bytes(self.start)
        (self.tmp / ".lfspass.config.lfspass-kconfig").unlink(missing_ok=True)   # no stamp: a first configure
        argv = [sys.executable, "-m", "lfspass", "kconfig", "--tree", str(self.tree), "--config", str(cfg)]
        for k, v in REQUESTS.items() if sets else ():
            argv += ["--set", f"{k}={v}"]
        took = _timed(argv, REPO, {"LFSPASS_CACHE": str(cache)})
        if cold:
            shutil.rmtree(cache)
        return took

    def again(self) -> float:
        """A second run on the config the last one wrote, with its stamp: nothing to do."""
        cfg = self.tmp / "lfspass.config"
        argv = [sys.executable, "-m", "lfspass", "kconfig", "--tree", str(self.tree), "--config", str(cfg)]
        for k, v in REQUESTS.items():
            argv += ["--set", f"{k}={v}"]
        _timed(argv, REPO, {"LFSPASS_CACHE": str(self.cache)})
        return _timed(argv, REPO, {"LFSPASS_CACHE": str(self.cache)})

    def same_as_make(self) -> bool:
        """make olddefconfig over lfspass's output leaves it as it is."""
        shutil.copyfile(self.tmp / "lfspass.config", self.make_obj / ".config")
        _timed(["make", "-s", f"O={self.make_obj}", "olddefconfig"], self.tree)
        return (self.make_obj / ".config").read_bytes() == (self.tmp / "lfspass.config").read_bytes()


def bench(label: str, tree: Path, config: Path, repeat: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="lfspass-bench-") as tmp_name:
        side = Side(tree, _read(config), Path(tmp_name))
        side.make(False), side.lfspass(False)   # warm-up: conf built in both warm folders, the cache made
        rows: dict[str, list[float]] = {k: [] for k in ("make cold", "lfspass cold", "make warm", "lfspass warm")}
        for _ in range(repeat):
            rows["make cold"].append(side.make(True))
            rows["lfspass cold"].append(side.lfspass(True))
            rows["make warm"].append(side.make(False))
            rows["lfspass warm"].append(side.lfspass(False))
        med = {k: statistics.median(v) for k, v in rows.items()}
        same = side.same_as_make()
        unchanged = side.again()
    print(f"{label}: {tree}  start {config.name} + {len(REQUESTS)} requests  (median of {repeat})")
    print(f"  {med['make cold']:6.2f} s  make olddefconfig, cold (compiles scripts/kconfig/conf)")
    print(f"  {med['lfspass cold']:6.2f} s  lfspass kconfig, cold (compiles conf, reads the Kconfig files)")
    print(f"  {med['make warm']:6.2f} s  make olddefconfig, warm (conf built)")
    print(f"  {med['lfspass warm']:6.2f} s  lfspass kconfig, warm (conf built, no stamp)")
    print(f"  {unchanged:6.2f} s  lfspass kconfig, nothing changed (its stamp matches: conf does not run)")
    goal, ok = GOALS[label], same
    for kind in ("cold", "warm"):
        ratio = med[f"lfspass {kind}"] / med[f"make {kind}"]
        ok = ok and ratio <= goal
        print(f"  ratio {kind}: {ratio:.2f}x ({'meets' if ratio <= goal else 'misses'} the {goal}x goal)")
    print(f"  make olddefconfig leaves lfspass's output unchanged: {'yes' if same else 'NO'}")
    return ok


def _newest() -> tuple[Path, str] | None:
    done = CACHE / "sid.done"
    if not done.is_file():
        return None
    tree, _config, version = done.read_text().split("\n")[:3]
    return (Path(tree), version) if Path(tree, "Kconfig").is_file() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--only", choices=("6.1", "newest"), help="one of the two trees")
    args = ap.parse_args()
    ok = True
    if args.only != "newest":
        tree = CACHE / "linux-source-6.1"
        if not (tree / "Kconfig").is_file():
            sys.exit(f"error: {tree}: not extracted; run `pytest tests/kernel/kconfig/test_configure.py` once")
        ok &= bench("6.1", tree, CONFIG_61, args.repeat)
    if args.only != "6.1":
        newest = _newest()
        if newest is None:
            print("newest: skipped (no sid tree; `pytest tests/kernel/kconfig/test_upgrade_report.py` fetches it)")
        else:
            ok &= bench("newest", newest[0], CONFIG_612, args.repeat)
    _graph_figure(args.repeat)
    return 0 if ok else 1


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


if __name__ == "__main__":
    sys.exit(main())
