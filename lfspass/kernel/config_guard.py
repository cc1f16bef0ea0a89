"""Guards around the build folder's .config: hand edits, requests re-checked, the signing key named."""
from __future__ import annotations

import json
from pathlib import Path

from lfspass.errors import BuildError, CheckFailed
from lfspass.kernel.kconfig.upgrade_report import ON, by_category, digest_of
from lfspass.model import config_values
from lfspass.kernel.kconfig.configure import verify
from lfspass.kernel.preflight import KBUILD_KEY, fingerprint


def report_edit(config: Path, before: dict[str, str], requests: list, base: str) -> None:
    """Say what became of a hand edit of the build folder's .config."""
    after = config_values(config.read_text(errors="replace"))
    if base != "current":
        print(f"kernel config: {config} was edited by hand; base = {base!r} rebuilds it from the recipe "
              "(base = \"current\" keeps hand edits)")
    for r in requests:
        if before.get(r.symbol, "n") != after.get(r.symbol, "n") and after.get(r.symbol) == r.value:
            print(f"kernel config: the hand edit set {r.symbol}={before.get(r.symbol, 'n')}; "
                  f"restored {r.symbol}={r.value} ({r.source} requests it)")


def verify_or_stop(tree: Path, config: Path, requests: list, when: str) -> None:
    """Stop (before or after compiling) when ``config`` breaks a request; name each one."""
    broken = verify(tree, config, requests)
    if broken:
        raise BuildError(f"{config} {when} no longer holds what lfspass requested: " + "; ".join(broken)
                         + "; run `doit kernel:config` (or fix the edit)")


def signing_summary(config: Path, from_recipe: bool) -> dict:
    """Which key signs the modules, by certificate fingerprint only (never the key itself)."""
    vals = config_values(config.read_text(errors="replace")) if config.exists() else {}
    if vals.get("MODULE_SIG") != "y":
        return {"signed": False}
    key = Path(vals.get("MODULE_SIG_KEY", KBUILD_KEY))
    return {"signed": True, "key": "recipe kernel.signing_key" if from_recipe else "lfspass, .lfspass/ beside the recipe",
            "sha256_fingerprint": fingerprint(key) if key.is_absolute() else ""}


REPORT = "upgrade-report.json"


def check_upgrade(build_dir: Path, config: Path, accept_upgrade: bool, accept_report: str, recipe: Path) -> None:
    """Stop before compiling while the upgrade report lists changes likely to break the host that
    ``config`` still has (a symbol the recipe turned back on is settled) and the recipe has not
    accepted them (``accept_upgrade = true`` or their digest in ``accept_report``)."""
    try:
        data = json.loads((build_dir / REPORT).read_text())
    except (OSError, ValueError):
        return
    now = config_values(config.read_text(errors="replace")) if config.exists() else {}
    left = [m for m in data.get("likely_to_break_the_host") or [] if now.get(m["symbol"], "") not in ON]
    digest = digest_of(data.get("version", ""), [[m["symbol"], m["old"], m["new"]] for m in left])
    if not left or accept_upgrade or accept_report == digest:
        return
    names = by_category([(m["category"], m["symbol"]) for m in left], limit=4)
    raise CheckFailed(f"the upgrade to Linux {data.get('version', '?')} turns off {len(left)} thing(s) the host may "
                      f"need ({names}); read {build_dir / 'upgrade-report.txt'}, then turn them on in [kernel.config] "
                      f"or accept with accept_report = \"{digest}\" under [kernel] in {recipe}")
