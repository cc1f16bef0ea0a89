"""Kernel trees for the tests: Debian's 6.12 (bookworm) and sid's newest linux-source, cached.

sid comes through apt with a private state folder and a suite override
(docs/explanation/kconfig.md#the-newest-kernel-debian-ships):
the machine's own sources stay untouched, and the mirror is the one the host's apt sources
name (never a URL written here).  Everything lands under build/test-cache/ and is reused.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
TEST_CACHE = Path(__file__).resolve().parents[1] / "build" / "test-cache"

# sid's tree comes from the Debian archive once (164 MB), then from build/test-cache: a test that
# uses it skips with the reason when the archive does not answer and nothing is cached.
NEEDS_SID = pytest.mark.network("debian", cached=TEST_CACHE / "sid.done")


def host_mirror() -> str | None:
    """The Debian archive URI the host's apt sources use (not the security archive)."""
    texts = []
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if f.suffix in (".list", ".sources") or f.name == "sources.list":
            try:
                texts.append(f.read_text())
            except OSError:
                pass
    for text in texts:
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if "security" not in uri and re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return None


def _apt_opts(state: Path) -> list[str]:
    return ["-o", f"Dir::Etc::sourcelist={state}/sources.list", "-o", "Dir::Etc::sourceparts=/dev/null",
            "-o", f"Dir::State::Lists={state}/lists", "-o", f"Dir::Cache={state}/cache",
            "-o", "Debug::NoLocking=1"]


def _extract(deb: Path, dest: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)


def sid_tree(cache: Path) -> tuple[Path, Path, str]:
    """(tree, Debian amd64 config, version) of sid's newest linux-source; raises RuntimeError(reason)."""
    done = cache / "sid.done"
    if done.is_file():
        tree, config, version = done.read_text().split("\n")[:3]
        if Path(tree, "Kconfig").is_file() and Path(config).is_file():
            return Path(tree), Path(config), version
    mirror = host_mirror()
    if not mirror:
        raise RuntimeError("no Debian mirror in the host's apt sources")
    state = cache / "sid-apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} sid main\n")
    up = subprocess.run(["apt-get", *_apt_opts(state), "update"], capture_output=True, text=True)
    if up.returncode != 0 or not any((state / "lists").glob("*sid*Packages*")):
        raise RuntimeError(f"sid archive unreachable: {(up.stderr.strip().splitlines() or ['apt-get update failed'])[-1]}")
    names = subprocess.run(["apt-cache", *_apt_opts(state), "pkgnames", "linux-source-"],
                           capture_output=True, text=True).stdout.split()
    vers = sorted((tuple(int(x) for x in n.split("-")[-1].split(".")), n.split("-")[-1])
                  for n in names if re.fullmatch(r"linux-source-\d+\.\d+", n))
    if not vers:
        raise RuntimeError("the sid archive has no linux-source-* package")
    version = vers[-1][1]
    debs = cache / "sid-debs"
    debs.mkdir(exist_ok=True)
    print(f"kernel_trees: downloading sid's linux-source-{version} (once)", file=sys.stderr)
    dl = subprocess.run(["apt-get", *_apt_opts(state), "download", f"linux-source-{version}",
                         f"linux-config-{version}"], cwd=debs, capture_output=True, text=True)
    if dl.returncode != 0:
        raise RuntimeError(f"apt-get download linux-source-{version} failed: {dl.stderr.strip()[-200:]}")
    pkg = cache / "sid-pkg"
    for deb in sorted(debs.glob(f"linux-*-{version}_*.deb")):
        _extract(deb, pkg)
    tarball = pkg / "usr" / "src" / f"linux-source-{version}.tar.xz"
    config = pkg / "usr" / "src" / f"linux-config-{version}" / "config.amd64_none_amd64.xz"
    with tarfile.open(tarball) as tf:
        top = tf.next().name.split("/")[0]
    subprocess.run(["rm", "-rf", str(cache / top)], check=True)
    subprocess.run(["tar", "-C", str(cache), "-xf", str(tarball)], check=True)
    tarball.unlink()  # the tree is what the tests use; the tarball is 150 MB more
    full = subprocess.run(["dpkg-deb", "-f", str(next(debs.glob(f"linux-source-{version}_*.deb"))), "Version"],
                          capture_output=True, text=True).stdout.strip()
    done.write_text(f"{cache / top}\n{config}\n{version} ({full})\n")
    return cache / top, config, f"{version} ({full})"


def bookworm_tree(cache: Path, version: str = "6.12") -> tuple[Path, Path]:
    """(tree, Debian amd64 config) of bookworm's linux-source-<version>, extracted once."""
    tarball = Path(f"/usr/src/linux-source-{version}.tar.xz")
    config = Path(f"/usr/src/linux-config-{version}/config.amd64_none_amd64.xz")
    if not tarball.is_file() or not config.is_file():
        raise RuntimeError(f"{tarball} or {config} missing: apt-get install linux-source-{version} "
                           f"linux-config-{version} (.ci/install)")
    dest, marker = cache / f"linux-source-{version}", cache / f"linux-source-{version}.extracted"
    if not marker.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        subprocess.run(["tar", "-C", str(cache), "-xf", str(tarball)], check=True)
        marker.write_text(str(tarball.stat().st_mtime))
    return dest, config


if __name__ == "__main__":  # prefetch: python tests/kernel_trees.py
    print(sid_tree(TEST_CACHE))


# --- the kernel's own result, for parity: what `make olddefconfig` makes of the same input -------

def request_lines(requests) -> str:
    """Requests as .config lines, written here (not by lfspass): ``CONFIG_X=v``, n as "is not set",
    a value that is no switch and no number in quotes (a string symbol's)."""
    def line(r) -> str:
        if r.value == "n":
            return f"# CONFIG_{r.symbol} is not set\n"
        if r.value in ("y", "m") or re.fullmatch(r"-?[0-9]+|0x[0-9a-fA-F]+", r.value):
            return f"CONFIG_{r.symbol}={r.value}\n"
        return f'CONFIG_{r.symbol}="{r.value}"\n'
    return "".join(line(r) for r in requests)


def named_base_config(tree: Path, target: str, obj: Path) -> str:
    """``make ARCH=x86_64 <target>`` (tinyconfig, defconfig, allnoconfig, ...) in its own O= folder."""
    obj.mkdir(parents=True, exist_ok=True)
    (obj / ".config").unlink(missing_ok=True)
    subprocess.run(["make", "-s", "-C", str(tree), f"O={obj}", "ARCH=x86_64", target], check=True, capture_output=True)
    return (obj / ".config").read_text()


def kernel_olddefconfig(tree: Path, start: str, requests, obj: Path) -> str:
    """The kernel's own verdict on the same input lfspass gets: ``start`` (a config's text) with the
    requests appended, through `make olddefconfig` as the build runs it (no ARCH)."""
    obj.mkdir(parents=True, exist_ok=True)
    cfg = obj / "input.config"
    cfg.write_text(start.rstrip("\n") + "\n" + request_lines(requests))
    subprocess.run(["make", "-s", "-C", str(tree), f"O={obj}", f"KCONFIG_CONFIG={cfg}", "olddefconfig"],
                   check=True, capture_output=True)
    return cfg.read_text()


def config_lines(text: str) -> list[str]:
    """The assignments of a .config (values and "is not set"), in the file's order."""
    return [line for line in text.splitlines() if line.startswith("CONFIG_") or line.endswith(" is not set")]


def parity_differences(expected: str, got: str, limit: int = 5) -> list[str]:
    """How lfspass's ``got`` differs from the kernel's ``expected``: the first ``limit`` symbols, with both values."""
    def values(text: str) -> dict[str, str]:
        out = {}
        for line in config_lines(text):
            if line.startswith("# CONFIG_"):
                out[line[2:].split(" ", 1)[0]] = "n"
            else:
                k, _, v = line.partition("=")
                out[k] = v
        return out
    want, have = values(expected), values(got)
    diffs = [f"{k}: kernel {want.get(k, '(absent)')}, lfspass {have.get(k, '(absent)')}"
             for k in sorted(want.keys() | have.keys()) if want.get(k) != have.get(k)]
    if not diffs and config_lines(expected) != config_lines(got):
        diffs = ["same values, different order"]
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])
