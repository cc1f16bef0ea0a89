"""Shared fixtures: paths, the real Debian kernel tree, running the CLI; the run's hook log,
`network` tests and the skip count (see hooks below)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINUX_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TEST_CACHE = REPO / "build" / "test-cache"
HOOKTRACE = REPO / "tests" / "hooktrace"   # its sitecustomize.py records the hooks each process runs
HOOK_CHECK = "test_every_hook_is_called_by_some_test"  # runs last: it reads what the whole run called
_HOOK_LOG = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def linux_tree() -> Path:
    """Debian's linux-source-6.1, extracted once into build/test-cache (kept between runs)."""
    if not LINUX_TARBALL.exists():
        pytest.fail(f"{LINUX_TARBALL} missing: apt-get install linux-source-6.1 (see .ci/run)")
    dest = TEST_CACHE / "linux-source-6.1"
    marker = TEST_CACHE / "linux-source-6.1.extracted"
    if not marker.exists():
        TEST_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        subprocess.run(["tar", "-C", str(TEST_CACHE), "-xf", str(LINUX_TARBALL)], check=True)
        marker.write_text(str(LINUX_TARBALL.stat().st_mtime))
    return dest


def absolute_module_sources(recipe_text: str) -> str:
    """A recipe's text (recipes/lab.toml's) for a copy in another folder: its relative
    ``[[kernel.external_modules]]`` sources made absolute (they start at recipes/)."""
    return recipe_text.replace('source = "external/', f'source = "{REPO}/recipes/external/')


@pytest.fixture(scope="session")
def lab_kernel():
    """The lab recipe's kernel, its external module and its install, built in the lab's own build
    folders by `doit kernel` (shared by the kernel and lab tests: built once a run)."""
    from lfspass.kernel.release import kernel_release
    from lfspass.plan import kernel_paths
    from lfspass.recipe import load_recipe

    lab = REPO / "recipes" / "lab.toml"
    proc = run_doit(f"recipe={lab}", "kernel", cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recipe = load_recipe(lab)
    return recipe, kernel_paths(recipe, kernel_release(recipe))


def _child_env(env: dict | None) -> dict[str, str]:
    """os.environ plus ``env``; a test's PYTHONPATH goes in front of the run's (the hook log's) one."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    if env and "PYTHONPATH" in env and os.environ.get("PYTHONPATH"):
        full_env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], os.environ["PYTHONPATH"]])
    return full_env


@pytest.fixture(scope="session")
def sid() -> tuple[Path, Path, str]:
    """(tree, Debian amd64 config, version) of sid's newest linux-source (tests mark it NEEDS_SID)."""
    from kernel_trees import sid_tree

    try:
        return sid_tree(TEST_CACHE)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        # NEEDS_SID already skipped the test when the archive is unreachable and nothing is cached.
        pytest.fail(f"no sid kernel although the Debian archive answers: {exc}")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m lfspass ARGS`` as a user would, capturing text output."""
    full_env = _child_env(env)
    proc = subprocess.run(
        [sys.executable, "-m", "lfspass", *args],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lfspass {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_doit(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``doit ARGS`` against the repo's dodo.py (its own .doit.db under cwd)."""
    full_env = _child_env(env)
    return subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "--dir", str(cwd or REPO), *args],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True,
    )


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A bad input: exit != 0, exactly one stderr line starting 'error:', no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# --- every hook is called: the run's hook log -----------------------------------------------

def _hooktrace():
    spec = importlib.util.spec_from_file_location("lfspass_hooktrace", HOOKTRACE / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config: pytest.Config) -> None:
    """One hook log per run; this process and every Python process it starts append to it."""
    trace = _hooktrace()
    log = Path(tempfile.mkdtemp(prefix="lfspass-hooks-")) / "hooks.log"
    log.touch()
    config.stash[_HOOK_LOG] = log
    os.environ[trace.LOG_ENV] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOKTRACE), os.environ.get("PYTHONPATH")) if p)
    trace.install(str(log))


def pytest_unconfigure(config: pytest.Config) -> None:
    log = config.stash.get(_HOOK_LOG, None)
    if log is not None:
        shutil.rmtree(log.parent, ignore_errors=True)


def hooks_called(config: pytest.Config) -> set[str]:
    """Names of the hooks lfspass called so far in this run, in any process."""
    return set(config.stash[_HOOK_LOG].read_text().split())


# Marker expressions that leave out only tests no hook depends on alone (the README's fast sets).
_WHOLE_MARKEXPRS = {"", "not slow", "not network", "not slow and not network", "not network and not slow"}


def whole_run(config: pytest.Config) -> str | None:
    """None when this run selects the whole suite (slow and network tests may be left out), else why not."""
    for arg in config.args:
        path = Path(arg.split("::")[0])
        path = path if path.is_absolute() else config.invocation_params.dir / path
        if "::" in arg or path.resolve() not in (REPO, REPO / "tests"):
            return f"it selects {arg}"
    if config.getoption("keyword"):
        return f"-k {config.getoption('keyword')!r}"
    if config.getoption("deselect"):
        return "--deselect"
    if config.getoption("lf", False) or config.getoption("stepwise", False):
        return "--lf/--sw"
    markexpr = " ".join((config.getoption("markexpr") or "").split())
    if markexpr not in _WHOLE_MARKEXPRS:
        return f"-m {markexpr!r}"
    return None


# --- `network` tests: skipped with the reason when the service does not answer -------------

_PROBED: dict[str, str | None] = {}
_SERVICES = {"debian": "the Debian archive", "pypi": "the Python package index"}


def _service_url(service: str) -> str:
    if service == "debian":
        from lfspass.vm.image.packages import host_mirror

        return host_mirror("sid")  # the archive the host's apt sources name
    return os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"


def network_unreachable(service: str) -> str | None:
    """None when ``service`` answers over HTTP, else the reason (asked once per run)."""
    if service not in _SERVICES:
        raise ValueError(f"@pytest.mark.network({service!r}): the services are {sorted(_SERVICES)}")
    if service not in _PROBED:
        url = "no URL"
        try:
            url = _service_url(service)
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20).close()
            _PROBED[service] = None
        except urllib.error.HTTPError:
            _PROBED[service] = None  # it answered
        except Exception as exc:  # no route, DNS, timeout, TLS, no mirror in the apt sources
            why = getattr(exc, "reason", None) or exc
            why = getattr(why, "strerror", None) or why
            _PROBED[service] = f"{_SERVICES[service]} {url} unreachable ({why})"
    return _PROBED[service]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After selection: ``@pytest.mark.network("debian" | "pypi", cached=PATH)`` tests skip with the
    reason when the service does not answer, unless PATH exists (what they download is cached);
    the hook check moves to the end of the run."""
    for item in items:
        mark = item.get_closest_marker("network")
        if mark is None:
            continue
        cached = mark.kwargs.get("cached")
        if cached is not None and Path(cached).exists():
            continue
        reason = network_unreachable(mark.args[0] if mark.args else "debian")
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"network: {reason}"))
    last = [item for item in items if getattr(item, "originalname", item.name) == HOOK_CHECK]
    items[:] = [item for item in items if item not in last] + last


# --- the end of a run: how many tests were skipped and why, on one line ----------------------

def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    reports = terminalreporter.stats.get("skipped", [])
    reasons: Counter[str] = Counter()
    for report in reports:
        text = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        text = text.removeprefix("Skipped: ")
        reasons[text if len(text) <= 120 else text[:117] + "..."] += 1
    detail = "; ".join(f"{n} x {why}" for why, n in reasons.most_common())
    terminalreporter.write_line(f"lfspass: {len(reports)} test(s) skipped" + (f": {detail}" if detail else ""))
