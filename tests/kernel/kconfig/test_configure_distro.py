"""A distribution's config through `doit kernel:config`: nothing forced, a persistent signing key,
hand edits of the build folder's .config re-checked, the release known before compiling."""
from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, run_doit
from lfspass.errors import BuildError

DEBIAN_61 = Path("/usr/src/linux-config-6.1/config.amd64_none_amd64.xz")
LAB = REPO / "recipes" / "lab.toml"


def _recipe(tmp_path: Path, tree: Path, base: str = str(DEBIAN_61), config: str = "") -> Path:
    text = LAB.read_text()
    text = text.replace('root = "../build/lab/root"', f'root = "{tmp_path / "root"}"')
    text = text.replace('source = "/usr/src/linux-source-6.1.tar.xz"', f'source = "{tree}"')
    text = text.replace('build_dir = "../build/lab/kernel"', f'build_dir = "{tmp_path / "b"}"')
    text = text.replace('base = "tinyconfig"', f'base = "{base}"')
    # The lab's tiny-kernel requests are not what a distro config is about.
    head, _, rest = text.partition("[kernel.config]\n")
    rest = rest[rest.index("\n[") + 1:] if "\n[" in rest else ""
    text = head + "[kernel.config]\n" + config + "\n" + rest
    (tmp_path / "r.toml").write_text(text)
    return tmp_path / "r.toml"


def _val(cfg: Path, sym: str) -> str | None:
    m = re.search(rf"^CONFIG_{sym}=(.*)$", cfg.read_text(), re.M)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def configured(linux_tree: Path, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """`doit kernel:config` once on a recipe whose base is Debian's 6.1 amd64 config."""
    tmp = tmp_path_factory.mktemp("distro")
    recipe = _recipe(tmp, linux_tree)
    proc = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp)
    return tmp, recipe, proc


def test_debian_config_keeps_module_signing_with_a_persistent_key(configured) -> None:
    tmp, _recipe_path, proc = configured
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = tmp / "b" / "obj" / ".config"
    assert _val(cfg, "MODULE_SIG") == "y" and _val(cfg, "MODULE_SIG_ALL") == "y"  # as Debian has it
    key = tmp / ".lfspass" / "module-signing-key.pem"
    assert _val(cfg, "MODULE_SIG_KEY") == f'"{key}"'
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "PRIVATE KEY" in key.read_text()
    # never under the install root or in the build folder
    assert not list((tmp / "b").rglob("*.pem")) and not (tmp / "root").exists()
    assert _val(cfg, "VFIO_PCI") == "m" and _val(cfg, "INTEL_IOMMU") == "y"


def test_hand_edit_dropping_a_request_is_restored_and_said(configured) -> None:
    tmp, recipe, proc = configured
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = tmp / "b" / "obj" / ".config"
    subprocess.run(["sed", "-i", "s/^CONFIG_VFIO_PCI=m/# CONFIG_VFIO_PCI is not set/", str(cfg)], check=True)
    status = run_doit(f"recipe={recipe}", "list", "--all", "--status", "kernel", cwd=tmp).stdout
    assert "R kernel:config" in status, status  # the edit is seen: the config step runs again
    again = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "restored VFIO_PCI=m" in again.stdout and _val(cfg, "VFIO_PCI") == "m"


def test_build_refuses_an_edited_config_before_compiling(configured, monkeypatch) -> None:
    """An edit made after the config step (kernel:build run on its own): stop, name the request."""
    from lfspass.graph import load_context
    from lfspass.kernel.tasks import KernelJob

    tmp, recipe, proc = configured
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = tmp / "b" / "obj" / ".config"
    text = cfg.read_text()
    try:
        cfg.write_text(text.replace("CONFIG_VFIO_PCI=m\n", "# CONFIG_VFIO_PCI is not set\n"))
        job = KernelJob(load_context(str(recipe)))
        monkeypatch.setattr("lfspass.kernel.tasks.run_make", lambda *a, **k: pytest.fail("make ran"))
        with pytest.raises(BuildError, match=r"VFIO_PCI=m \(from core\) refused"):
            job.do_build()
    finally:
        cfg.write_text(text)


def test_localversion_in_the_config_stops_before_compiling(linux_tree: Path, tmp_path: Path) -> None:
    base = tmp_path / "carried.config"
    base.write_text("CONFIG_LOCALVERSION=\"-custom\"\n")
    recipe = _recipe(tmp_path, linux_tree, base=str(base), config='64BIT = "y"\n')
    proc = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "release 6.1.192-custom" in err and 'CONFIG_LOCALVERSION="-custom"' in err and "expects 6.1.192" in err


def test_preflight_names_the_tool_the_seed_and_the_release_setting(tmp_path: Path, monkeypatch) -> None:
    from lfspass.kernel import preflight

    cfg = tmp_path / "config"
    cfg.write_text("CONFIG_DEBUG_INFO_BTF=y\n")
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    with pytest.raises(BuildError, match="DEBUG_INFO_BTF=y, which needs pahole; apt-get install dwarves"):
        preflight.check_tools(cfg)
    cfg.write_text("CONFIG_RANDSTRUCT_FULL=y\n")
    with pytest.raises(BuildError, match=r"RANDSTRUCT.*RANDSTRUCT_NONE"):
        preflight.check_tools(cfg)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n")
    (tree / "localversion-site").write_text("-site\n")
    cfg.write_text('CONFIG_LOCALVERSION="-custom"\n')
    assert preflight.config_release(tree, cfg)[0] == "6.12.117-site-custom"
    with pytest.raises(BuildError, match=r"builds release 6.12.117-site-custom, but r.toml expects 6.12.117 "
                                         r"\(localversion\* files .*CONFIG_LOCALVERSION=\"-custom\""):
        preflight.check_release(tree, cfg, "6.12.117", Path("r.toml"))


def test_signing_key_from_the_recipe_or_made_once(tmp_path: Path) -> None:
    from lfspass.kernel import preflight

    recipe = tmp_path / "r.toml"
    with pytest.raises(BuildError, match=r"kernel\.signing_key = 'nope\.pem': no such file"):
        preflight.signing_key(recipe, "nope.pem")
    made = preflight.signing_key(recipe, "")
    assert made == tmp_path / ".lfspass" / "module-signing-key.pem"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600 and stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    before = made.read_bytes()
    assert preflight.signing_key(recipe, "") == made and made.read_bytes() == before  # kept, not remade
    assert preflight.signing_key(recipe, str(made)) == made
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", preflight.fingerprint(made))


def test_cli_refuses_compile_test_resolution_and_a_leading_zero(linux_tree: Path, tmp_path: Path) -> None:
    from conftest import assert_one_error_line, run_cli

    cfg = tmp_path / "config"
    cfg.write_bytes(__import__("lzma").open(DEBIAN_61).read())
    before = cfg.read_bytes()
    args = ["kconfig", "--tree", str(linux_tree), "--config", str(cfg)]
    assert_one_error_line(run_cli(*args, "--set", "NR_CPUS=0128"), "NR_CPUS=0128", "leading zeros", "write 128")
    err = assert_one_error_line(run_cli(*args, "--set", "VFIO_PLATFORM=m", "--resolve"),
                                "VFIO_PLATFORM=m", "only COMPILE_TEST would allow it", "resolve found no safe change")
    assert "enable ARM" not in err and "ARM not defined for this architecture" in err
    assert cfg.read_bytes() == before  # nothing written
