"""Before the compile: the release the config builds, the tools it needs, a persistent signing key.

Everything here reads the finished .config, so a mismatch stops the run before minutes of
compiling and names the setting that causes it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lfspass.errors import BuildError
from lfspass.model import config_values
from lfspass.kernel.release import localversion_files, tree_release

KBUILD_KEY = "certs/signing_key.pem"  # kbuild makes a random key there when the file is missing
_GENKEY = """[ req ]
default_bits = 4096
distinguished_name = req_distinguished_name
prompt = no
string_mask = utf8only
x509_extensions = myexts

[ req_distinguished_name ]
CN = lfspass module signing key

[ myexts ]
basicConstraints=critical,CA:FALSE
keyUsage=digitalSignature
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


def config_release(tree: Path, config: Path) -> tuple[str, list[str]]:
    """(release as `make kernelrelease` gives it, the settings that add to the Makefile version)."""
    vals = config_values(config.read_text(errors="replace"))
    files = localversion_files(tree)
    local = vals.get("LOCALVERSION", "")
    why = []
    if files:
        why.append(f"localversion* files in {tree} ({files!r})")
    if local:
        why.append(f'CONFIG_LOCALVERSION="{local}" in {config}')
    release = tree_release(tree, local)
    if vals.get("LOCALVERSION_AUTO") == "y" and (tree / ".git").exists():
        why.append(f"CONFIG_LOCALVERSION_AUTO=y on the git tree {tree} (adds -g<commit>)")
        release += "-g?"
    return release, why


def check_release(tree: Path, config: Path, expected: str, recipe: Path) -> None:
    """Stop before compiling when the config builds another release than the recipe expects."""
    got, why = config_release(tree, config)
    if got == expected:
        return
    cause = "; ".join(why) or "the tree's Makefile"
    raise BuildError(f"{config} builds release {got}, but {recipe} expects {expected} ({cause}); "
                     "set LOCALVERSION under [kernel.config] to the suffix you want (\"\" for none)"
                     + (" and LOCALVERSION_AUTO = \"n\"" if "AUTO" in cause else "")
                     + " or [kernel] version to the release")


def check_tools(config: Path) -> None:
    """What the config needs that a missing tool or a random seed would break, before compiling."""
    vals = config_values(config.read_text(errors="replace"))
    if vals.get("DEBUG_INFO_BTF") == "y" and not shutil.which("pahole"):
        raise BuildError(f"{config} has CONFIG_DEBUG_INFO_BTF=y, which needs pahole; "
                         "apt-get install dwarves (or request DEBUG_INFO_BTF = \"n\" in [kernel.config])")
    if vals.get("RANDSTRUCT_FULL") == "y" or vals.get("RANDSTRUCT_PERFORMANCE") == "y" \
            or vals.get("GCC_PLUGIN_RANDSTRUCT") == "y":
        raise BuildError(f"{config} turns on RANDSTRUCT, whose seed is random per build folder (not "
                         "reproducible); request RANDSTRUCT_NONE = \"y\" in [kernel.config]")


def needs_signing_key(config: Path) -> bool:
    """True when the build would sign modules with a key kbuild generates (random every build)."""
    vals = config_values(config.read_text(errors="replace"))
    return vals.get("MODULE_SIG") == "y" and vals.get("MODULE_SIG_KEY", KBUILD_KEY) == KBUILD_KEY


def signing_key(recipe_path: Path, named: str) -> Path:
    """The persistent key+certificate PEM: the recipe's, else one made once in .lfspass/ beside it."""
    if named:
        key = Path(named)
        if not key.is_file():
            raise BuildError(f"{recipe_path}: kernel.signing_key = {named!r}: no such file; name a PEM holding "
                             "the private key and its certificate, or remove the key to let lfspass make one")
        return key.resolve()
    folder = recipe_path.resolve().parent / ".lfspass"
    key = folder / "module-signing-key.pem"
    if key.is_file():
        return key
    if not shutil.which("openssl"):
        raise BuildError("the config signs modules and lfspass must make a signing key: apt-get install openssl")
    folder.mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        conf, out = Path(tmp) / "x509.genkey", Path(tmp) / "key.pem"
        conf.write_text(_GENKEY)
        old = os.umask(0o077)
        try:
            proc = subprocess.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "36500",
                                   "-batch", "-x509", "-config", str(conf), "-outform", "PEM",
                                   "-out", str(out), "-keyout", str(out)], capture_output=True, text=True)
        finally:
            os.umask(old)
        if proc.returncode != 0:
            raise BuildError(f"openssl could not make the module signing key: {proc.stderr.strip()[-200:]}")
        os.chmod(out, 0o600)
        os.rename(out, key)
    print(f"kernel config: made the module signing key {key} (0600; keep it to rebuild the same modules)")
    return key


def fingerprint(key: Path) -> str:
    """sha256 fingerprint of the certificate in ``key`` (what the manifest records, never the key)."""
    proc = subprocess.run(["openssl", "x509", "-in", str(key), "-noout", "-fingerprint", "-sha256"],
                          capture_output=True, text=True)
    return proc.stdout.strip().partition("=")[2] if proc.returncode == 0 else ""
