"""Guards around the build folder's .config: hand edits, requests re-checked, the signing key named."""
from __future__ import annotations

from pathlib import Path

from lfspass.errors import BuildError
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
