"""The image guest's packages: the host's archive and release, the timestamp, and the mmdebstrap run with its stages."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from datetime import datetime, UTC
from pathlib import Path

from lfspass.diskspace import Watch
from lfspass.errors import LfspassError, ToolFailed, VmError
from lfspass.vm.children import Run
from lfspass.fsutil import require_tool

# dbus lets logind act on the ACPI power button (a clean `system_powerdown`) and hold SSH sessions.
BASE_PACKAGES = ["linux-image-amd64", "systemd-sysv", "udev", "dbus", "openssh-server"]
CACHE_ENV = "LFSPASS_APT_CACHE"
# mmdebstrap's own stage lines -> the progress names docs/howto/image-guests.md promises.
STAGES = [("running apt-get update", "resolving packages"), ("downloading packages", "downloading"),
          ("extracting archives", "unpacking"), ("installing remaining packages", "installing packages"),
          ("cleaning package lists", "cleaning up")]


def host_sources(etc: Path = Path("/etc/apt")) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every `deb` entry in the host's apt sources, deb822 files and sources.list alike."""
    out: list[tuple[str, list[str]]] = []
    for path in sorted(etc.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                out += [(uri, fields.get("Suites", "").split()) for uri in fields.get("URIs", "").split()]
    for path in [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    out.append((m.group(1), [m.group(2)]))
    return out


def host_suite(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", os_release.read_text(), re.M)
    except OSError:
        m = None
    if not m:
        raise VmError(f"{os_release} names no VERSION_CODENAME: set installer.suite (e.g. bookworm)")
    return m.group(1)


def host_mirror(suite: str, etc: Path = Path("/etc/apt")) -> str:
    """The host's archive for ``suite`` (read at run time: the project names no mirror)."""
    sources = host_sources(etc)
    for uri, suites in sources:
        if suite in suites:
            return uri
    if sources:
        return sources[0][0]
    raise VmError(f"no `deb` entry in {etc}/sources.list or sources.list.d: set installer.mirror to an archive URI")


def image_epoch(recipe_timestamp: str) -> tuple[int, str]:
    """(epoch, where it came from): [kernel] timestamp, else $SOURCE_DATE_EPOCH, else now."""
    if recipe_timestamp:
        text = recipe_timestamp.strip()
        if text.isdigit():
            return int(text), "[kernel] timestamp"
        proc = subprocess.run(["date", "-u", "-d", text, "+%s"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise VmError(f"kernel.timestamp = {text!r}: not a date `date -d` reads, e.g. 2024-01-01 00:00:00 UTC")
        return int(proc.stdout), "[kernel] timestamp"
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    if env:
        if not env.isdigit():
            raise VmError(f"SOURCE_DATE_EPOCH={env!r}: expected seconds since 1970 (digits only); unset or fix it")
        return int(env), "SOURCE_DATE_EPOCH"
    return int(time.time()), "now (set [kernel] timestamp or SOURCE_DATE_EPOCH for a reproducible image)"


def stamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def debs_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.deb")) if folder.is_dir() else 0


def mmdebstrap_argv(tree: Path, suite: str, mirror: str, packages: list[str], cache: Path) -> list[str]:
    """Root mode, minbase; the apt cache is copied in before and out after, so a rebuild downloads nothing."""
    tool = require_tool("mmdebstrap", "mmdebstrap")
    require_tool("flock", "util-linux")
    q, debs = shlex.quote(str(cache)), '"$1/var/cache/apt/archives"'
    # Only the .debs travel, under a lock: builds running at once share the cache safely, and
    # apt's own partial/ and lock files never reach another build's tree.
    return ["nice", "-n", "10", tool, "--mode=root", "--variant=minbase", "--format=directory",
            "--include=" + ",".join(dict.fromkeys([*BASE_PACKAGES, *packages])),
            "--skip=essential/unlink",  # keep the essential debs in the cache too
            f"--setup-hook=mkdir -p {debs} && flock {q}/.lock find {q} -maxdepth 1 -name '*.deb' "
            f"-exec cp -p -t {debs} {{}} +",
            f"--customize-hook=flock {q}/.lock find {debs} -maxdepth 1 -name '*.deb' -exec cp -p -n -t {q} {{}} +",
            suite, str(tree), mirror]


def explain(output: str, suite: str, mirror: str, log: Path) -> LfspassError:
    """mmdebstrap's failure as one cause: unknown package (the recipe's), unreachable archive, full disk, or its last E: line."""
    if m := re.search(r"Unable to locate package (\S+)", output):
        return VmError(f"package {m.group(1)!r} does not exist in {suite} at {mirror}: fix installer.packages; "
                       f"full log: {log}")
    if m := re.search(r"Package '?(\S+?)'? has no installation candidate", output):
        return VmError(f"package {m.group(1)!r} has no installable version in {suite}: fix installer.packages; "
                       f"full log: {log}")
    if "No space left on device" in output:
        return ToolFailed(f"the disk holding the build folder is full (No space left on device); free space; "
                          f"full log: {log}")
    if re.search(r"Could not (connect|resolve)|Failed to fetch|Temporary failure resolving|Connection refused", output):
        return ToolFailed(f"the archive {mirror} cannot be reached for {suite} (apt could not fetch its index); "
                          f"check installer.mirror or the host's apt sources; full log: {log}")
    errors = [l for l in output.splitlines() if l.startswith("E:")]
    last = (errors or output.strip().splitlines() or ["(no output)"])[-1].strip()[:200]
    return ToolFailed(f"mmdebstrap failed ({last}); full log: {log}")


def run_mmdebstrap(argv: list[str], tree: Path, cache: Path, env: dict, log, say, suite: str, mirror: str,
                   run: Run | None = None) -> int:
    """Run mmdebstrap, one progress line per finished stage; returns the bytes downloaded.

    Under ``run`` (a Run of its own when none is given): its group stopped on any exit, even lfspass's SIGKILL.
    """
    if run is None:
        with Run(tree.parent, "mmdebstrap") as own:
            return run_mmdebstrap(argv, tree, cache, env, log, say, suite, mirror, own)
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    cached = debs_size(cache)
    # 60 s between SIGTERM and SIGKILL: mmdebstrap unmounts what it mounted in the tree on SIGTERM.
    proc = run.popen(argv, "mmdebstrap", grace=60, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                     errors="replace", env={**os.environ, **env})
    # mmdebstrap sets LC_ALL=C.UTF-8 for itself and everything it runs: the lines explain() and
    # _follow() read are apt's and mmdebstrap's English whatever the host's locale.
    output: list[str] = []
    try:
        with Watch(proc, tree.parent) as watch:   # the reserve: stopped (and cleaned up) before the disk fills
            _follow(proc, tree, cache, cached, log, say, output)
    finally:
        run.stop(proc)   # stopped from outside or done: nothing of its group stays
    log.flush()
    if watch.crossed is not None:
        raise VmError(f"mmdebstrap stopped before the disk filled up: {watch.crossed.said()}; free space or set "
                      f"[vms] dir on another filesystem; full log: {log.name}")
    if proc.returncode != 0:
        raise explain("".join(output), suite, mirror, Path(log.name))
    return max(0, debs_size(cache) - cached)


def _follow(proc: subprocess.Popen[str], tree: Path, cache: Path, cached: int, log, say, output: list[str]) -> None:
    """Copy mmdebstrap's lines to the log; say each stage when the next one starts."""
    stage, started = None, time.monotonic()
    assert proc.stdout is not None  # run_mmdebstrap starts it with stdout=PIPE
    for line in proc.stdout:
        log.write(line)
        output.append(line)
        new = next((name for key, name in STAGES if key in line), None)
        if new is None or new == stage:
            continue
        now = time.monotonic()
        if stage == "downloading":
            downloaded = max(0, debs_size(tree / "var/cache/apt/archives") - cached)
            say(f"downloading: {downloaded / 1e6:.1f} MB ({cached / 1e6:.1f} MB from the cache {cache}), "
                f"{now - started:.0f} s")
        elif stage is not None:
            say(f"{stage}: {now - started:.0f} s")
        stage, started = new, now
    proc.wait()
    if stage and proc.returncode == 0:
        say(f"{stage}: {time.monotonic() - started:.0f} s")


def package_versions(tree: Path) -> dict[str, str]:
    """name -> version of every installed package, from the image's dpkg status."""
    out: dict[str, str] = {}
    for stanza in (tree / "var/lib/dpkg/status").read_text(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(out.items()))
