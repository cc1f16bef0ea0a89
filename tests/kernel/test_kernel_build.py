"""Kernel build and install: reproducible environment, atomic install, manifest, the doit graph."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import LINUX_TARBALL, REPO, absolute_module_sources, assert_one_error_line, run_doit
from lfspass.errors import BuildError
from lfspass.fsutil import sha256_file
from lfspass.kernel.build import BuildLayout, build_timestamp, make_env, prepare_source, run_make
from lfspass.kernel.install import install_kernel
from lfspass.plan import kernel_paths
from lfspass.recipe import load_recipe

LAB = REPO / "recipes" / "lab.toml"
LAB_BUILD = REPO / "build" / "lab" / "kernel"
LAB_CCACHE = REPO / "build" / "lab" / "ccache"


def write_recipe(path: Path, *, source: str, build_dir: Path, root: Path, extra: str = "",
                 config: str = "") -> Path:
    """The lab recipe with its own source, build folder and root (same kernel settings)."""
    text = LAB.read_text()
    text = text.replace('root = "../build/lab/root"', f'root = "{root}"')
    text = text.replace('source = "/usr/src/linux-source-6.1.tar.xz"', f'source = "{source}"{extra}')
    text = text.replace('build_dir = "../build/lab/kernel"', f'build_dir = "{build_dir}"')
    text = text.replace("[kernel.config]\n", "[kernel.config]\n" + config)
    path.write_text(absolute_module_sources(text))
    return path


# ---------------------------------------------------------------- fast: environment
def test_reproducible_env(tmp_path, monkeypatch):
    tree, bdir = tmp_path / "tree", tmp_path / "b"
    tree.mkdir()
    (tree / "Makefile").write_text("VERSION = 6\n")
    os.utime(tree / "Makefile", (1700000000, 1700000000))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.delenv("CCACHE_DIR", raising=False)
    assert build_timestamp("2024-01-01 00:00:00 UTC", tree) == "2024-01-01 00:00:00 UTC"
    assert build_timestamp("", tree) == "Tue Nov 14 22:13:20 UTC 2023"  # the tree's date
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert build_timestamp("", tree) == "Thu Jan 01 00:00:00 UTC 1970"

    env, make_vars = make_env(tree, bdir, "T", use_ccache=False)
    assert env["KBUILD_BUILD_TIMESTAMP"] == "T"
    assert (env["KBUILD_BUILD_USER"], env["KBUILD_BUILD_HOST"], env["KBUILD_BUILD_VERSION"]) == ("lfspass", "lfspass", "1")
    # debug info only: kbuild's own -fmacro-prefix-map must stay the one __FILE__ sees
    obj = bdir / "obj"
    assert env["KCFLAGS"] == env["KAFLAGS"] == (f"-fdebug-prefix-map={obj}=. -fdebug-prefix-map={tree}/= "
                                                f"-fdebug-prefix-map={obj}/=")
    assert env["LC_ALL"] == "C" and env["TZ"] == "UTC" and env["LOCALVERSION"] == ""
    assert make_vars == [] and "CCACHE_DIR" not in env

    env, make_vars = make_env(tree, bdir, "T", use_ccache=True)
    if shutil.which("ccache"):
        assert make_vars == ["CC=ccache gcc"]
        assert env["CCACHE_DIR"] == str(tmp_path / "ccache")      # beside the build folder
        assert env["CCACHE_BASEDIR"] == str(tmp_path)             # common to tree and obj


def test_failed_build_names_log_and_error(tmp_path):
    (tmp_path / "bad.c").write_text("int main(void) { return missing_symbol; }\n")
    (tmp_path / "Makefile").write_text("all:\n\tgcc -c bad.c -o bad.o\n")
    log = tmp_path / "build.log"
    with pytest.raises(BuildError) as info:
        run_make(["make", "-C", str(tmp_path)], {"LC_ALL": "C"}, log)
    msg = info.value.one_line()
    assert "'missing_symbol' undeclared" in msg and f"full log: {log}" in msg
    assert "missing_symbol" in log.read_text()


def test_progress_counts_compiled_files(tmp_path):
    import io

    from lfspass.kernel.build import _Progress

    out = io.StringIO()  # not a terminal: plain lines, not a rewritten one
    progress = _Progress(expected=4, stream=out)
    for line in ("  CC      init/main.o\n", "  LD      vmlinux\n", "  CC [M]  drivers/vfio/vfio_main.o\n"):
        progress.line(line)
    progress.show(progress.start + 5)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("kernel build: 1 files compiled (~25%)")
    assert lines[-1].startswith("kernel build: 2 files compiled (~50%), 5 s") and "\r" not in out.getvalue()


def test_prepare_source_extracts_once_and_atomically(tmp_path):
    pkg = tmp_path / "pkg" / "linux-x"
    pkg.mkdir(parents=True)
    (pkg / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 2\nEXTRAVERSION =\n")
    (pkg / "Kconfig").write_text("")
    tarball = tmp_path / "linux-x.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(pkg, arcname="linux-x")
    bdir = tmp_path / "b"
    tree = prepare_source(tarball, bdir)
    assert tree == bdir / "src" / "linux-x" and (tree / "Kconfig").is_file()
    (tree / "scratch").write_text("kept")  # a second call must not extract again
    assert prepare_source(tarball, bdir) == tree and (tree / "scratch").exists()
    # Another tarball with the same top folder replaces the tree.
    (pkg / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 2\nEXTRAVERSION = -up\n")
    os.utime(pkg / "Makefile", (1, 1))
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(pkg, arcname="linux-x")
    tree = prepare_source(tarball, bdir)
    assert "-up" in (tree / "Makefile").read_text() and not (tree / "scratch").exists()
    assert sorted(p.name for p in (bdir / "src").iterdir()) == ["linux-x", "linux-x.lfspass-source"]


# ---------------------------------------------------------------- fast: install
def fake_build(bdir: Path, tag: str) -> BuildLayout:
    """Real files where a build leaves them (no CONFIG_MODULES, so no make is needed)."""
    lay = BuildLayout(bdir)
    lay.bzimage.parent.mkdir(parents=True, exist_ok=True)
    lay.bzimage.write_bytes(b"bzImage " + tag.encode())
    lay.system_map.write_text(f"ffffffff81000000 T _text {tag}\n")
    lay.config.write_text(f"CONFIG_64BIT=y\n# CONFIG_MODULES is not set\nCONFIG_LOCALVERSION=\"{tag}\"\n")
    (lay.obj / "modules.builtin").write_text("kernel/drivers/vfio/vfio.ko\n")
    return lay


def test_install_is_atomic_and_keeps_other_releases(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", source=str(LINUX_TARBALL),
                                      build_dir=tmp_path / "b", root=tmp_path / "root"))
    root = recipe.root
    tree = tmp_path / "tree"
    (tree / "Documentation").mkdir(parents=True)
    (tree / "Documentation" / "index.rst").write_text("docs\n")
    installed = {}
    for rel in ("6.1.1", "6.1.2"):
        lay = fake_build(tmp_path / "b", rel)
        paths = kernel_paths(recipe, rel)
        man = install_kernel(root, paths, rel, tree, lay, jobs=1, env={}, make_vars=[], docs=True,
                             inputs={"source": {"kind": "tree"}})
        installed[rel] = paths
        assert paths.vmlinuz.name == f"vmlinuz-{rel}-lfs-12.2"
        assert man["files"][f"boot/vmlinuz-{rel}-lfs-12.2"] == sha256_file(paths.vmlinuz)
        assert man["files"][f"lib/modules/{rel}/modules.builtin"] == sha256_file(paths.modules_builtin)
        assert f"usr/share/doc/linux-{rel}/index.rst" in man["files"]
        assert json.loads(paths.manifest.read_text()) == man and man["source"] == {"kind": "tree"}
        assert paths.modules_dep.read_text() == ""  # no loadable modules: empty, but there
    # The first release is intact after the second install.
    old = installed["6.1.1"]
    assert old.vmlinuz.read_bytes() == b"bzImage 6.1.1"
    assert old.config.read_text().endswith('"6.1.1"\n')
    assert old.modules_builtin.is_file() and old.manifest.is_file()
    # Reinstalling a release replaces its files and its module folder as a whole.
    (old.modules_dir / "stale").write_text("x")
    lay = fake_build(tmp_path / "b", "6.1.1-new")
    install_kernel(root, old, "6.1.1", tree, lay, jobs=1, env={}, make_vars=[], docs=False, inputs={})
    assert old.vmlinuz.read_bytes() == b"bzImage 6.1.1-new" and not (old.modules_dir / "stale").exists()
    assert installed["6.1.2"].vmlinuz.read_bytes() == b"bzImage 6.1.2"
    # Nothing temporary is left next to what was installed.
    for folder in (root / "boot", root / "lib" / "modules", root / "usr" / "share" / "doc"):
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], folder


def test_install_refuses_an_unfinished_build(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", source=str(LINUX_TARBALL),
                                      build_dir=tmp_path / "b", root=tmp_path / "root"))
    lay = fake_build(tmp_path / "b", "x")
    lay.bzimage.unlink()
    with pytest.raises(BuildError, match="bzImage is missing"):
        install_kernel(recipe.root, kernel_paths(recipe, "6.1.1"), "6.1.1", tmp_path, lay,
                       jobs=1, env={}, make_vars=[], docs=False, inputs={})
    assert not (recipe.root / "boot").exists()


def test_manifest_inputs(tmp_path, linux_tree):
    from lfspass.kernel.tasks import KernelJob
    from lfspass.graph import load_context

    recipe = write_recipe(tmp_path / "r.toml", source=str(linux_tree), build_dir=tmp_path / "b",
                          root=tmp_path / "root")
    job = KernelJob(load_context(str(recipe)))
    env, _ = make_env(linux_tree, tmp_path / "b", "T", use_ccache=False)
    job.layout.obj.mkdir(parents=True)
    job.layout.config.write_text("CONFIG_64BIT=y\n")
    inputs = job.manifest_inputs(linux_tree, env)
    reqs = {(r["symbol"], r["value"], r["source"]) for r in inputs["requests"]}
    assert ("VFIO_PCI", "m", "core") in reqs and ("SERIAL_8250", "y", "recipe") in reqs
    assert not any(s == "MODULE_SIG" for s, _v, _src in reqs)  # nothing forced against the base
    assert inputs["module_signing"] == {"signed": False}
    assert inputs["source"]["kind"] == "tree" and inputs["source"]["release"] == "6.1.192"
    assert len(inputs["source"]["identity"]) == 64
    assert inputs["base"] == {"name": "tinyconfig"}
    assert {"core", "lab", "generic"} <= set(inputs["plugins"])
    assert inputs["compiler"].startswith("gcc") and inputs["make"].startswith("GNU Make")
    assert inputs["env"]["KBUILD_BUILD_TIMESTAMP"] == "T" and "KCFLAGS" in inputs["env"]


# ---------------------------------------------------------------- the doit graph (configure only)
def test_graph_config_reruns_only_on_change(tmp_path, linux_tree):
    recipe = write_recipe(tmp_path / "r.toml", source=str(linux_tree), build_dir=tmp_path / "b",
                          root=tmp_path / "root")
    first = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert ".  kernel:config" in first.stdout and (tmp_path / "b/obj/.config").is_file()
    mtime = (tmp_path / "b/obj/.config").stat().st_mtime_ns
    again = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert "-- kernel:config" in again.stdout, again.stdout  # up to date: Kconfig not parsed
    status = run_doit(f"recipe={recipe}", "list", "--all", "--status", "kernel", cwd=tmp_path).stdout
    assert "U kernel:config" in status and "R kernel:build" in status
    # A changed request makes the config step (and what follows) run again.
    write_recipe(recipe, source=str(linux_tree), build_dir=tmp_path / "b", root=tmp_path / "root",
                 config='PCI_STUB = "y"\n')
    status = run_doit(f"recipe={recipe}", "list", "--all", "--status", "kernel", cwd=tmp_path).stdout
    assert "R kernel:config" in status, status
    third = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert "CONFIG_PCI_STUB=y" in (tmp_path / "b/obj/.config").read_text()
    assert (tmp_path / "b/obj/.config").stat().st_mtime_ns != mtime, third.stdout


def test_base_current_carries_the_installed_config_forward(tmp_path, linux_tree):
    recipe = write_recipe(tmp_path / "r.toml", source=str(linux_tree), build_dir=tmp_path / "b",
                          root=tmp_path / "root")
    recipe.write_text(recipe.read_text().replace('base = "tinyconfig"', 'base = "current"'))
    proc = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert_one_error_line(proc, "base = 'current'", "tinyconfig")
    # An older kernel's config under the root seeds the new tree; a choice made there
    # by hand (PCI_STUB, asked by no request) survives, and the requests are applied.
    (tmp_path / "root/boot").mkdir(parents=True)
    (tmp_path / "root/boot/config-6.0.9").write_text("CONFIG_64BIT=y\nCONFIG_PCI=y\nCONFIG_PCI_STUB=y\n")
    proc = run_doit(f"recipe={recipe}", "kernel:config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starting from" in proc.stdout and "config-6.0.9" in proc.stdout
    text = (tmp_path / "b/obj/.config").read_text()
    assert "CONFIG_PCI_STUB=y" in text and "CONFIG_VFIO_PCI=m" in text


def test_bad_source_is_one_error_line(tmp_path):
    tree = tmp_path / "notlinux"
    tree.mkdir()
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\n")
    recipe = write_recipe(tmp_path / "r.toml", source=str(tree), build_dir=tmp_path / "b", root=tmp_path / "root")
    proc = run_doit(f"recipe={recipe}", "kernel", cwd=tmp_path)
    assert_one_error_line(proc, str(tree), "not a Linux tree")


def test_missing_source_names_the_way_without_a_build(tmp_path):
    """The shipped host recipe on a machine without its /sources tree: one line, and the way that
    needs no tree (the installed kernel) works as the line says."""
    recipe = tmp_path / "r.toml"
    text = (REPO / "recipes/hpe-dl380-t10.toml").read_text().replace('root = "/"', 'root = "root"', 1)
    recipe.write_text(text.replace('source = "/sources/linux-6.10.5"', f'source = "{tmp_path}/linux-6.10.5"', 1)
                      .replace('build_dir = "/sources/linux-6.10.5-lfspass"', f'build_dir = "{tmp_path}/b"', 1))
    proc = run_doit(f"recipe={recipe}", "kernel", cwd=tmp_path)
    assert_one_error_line(proc, f"{tmp_path}/linux-6.10.5", "no such folder or tarball", 'set source = ""')
    assert not (tmp_path / "root").exists() and not (tmp_path / "b" / "src").exists()   # nothing half made
    recipe.write_text(recipe.read_text().replace(f'source = "{tmp_path}/linux-6.10.5"', 'source = ""', 1))
    proc = run_doit(f"recipe={recipe}", "kernel", "grub", "vfio", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "vmlinuz-6.10.5-lfs-12.2" in (tmp_path / "root/boot/grub/grub.cfg").read_text()


# ---------------------------------------------------------------- slow: real builds
@pytest.mark.slow
def test_lab_kernel_installs_and_second_run_does_nothing(lab_kernel):
    recipe, paths = lab_kernel
    assert paths.vmlinuz.name.startswith("vmlinuz-6.1.") and paths.vmlinuz.name.endswith("-lfs-12.2")
    for p in (paths.vmlinuz, paths.system_map, paths.config, paths.modules_dep, paths.modules_builtin):
        assert p.is_file(), p
    assert "CONFIG_VFIO_PCI=m" in paths.config.read_text()
    assert "vfio-pci.ko" in paths.modules_dep.read_text()
    man = json.loads(paths.manifest.read_text())
    root = recipe.root
    for rel, digest in man["files"].items():
        if isinstance(digest, str):
            assert sha256_file(root / rel) == digest, rel
    assert man["source"]["sha256"] == sha256_file(LINUX_TARBALL)
    again = run_doit(f"recipe={LAB}", "kernel", cwd=REPO)
    assert again.returncode == 0, again.stderr
    for sub in ("config", "build", "external", "install"):
        assert f"-- kernel:{sub}" in again.stdout, again.stdout


@pytest.fixture(scope="module")
def clean_builds(lab_kernel, tmp_path_factory):
    """Two builds of the lab kernel, each from a clean build folder (the lab tarball).

    Honest note: both share the lab build's ccache (build/lab/ccache), so most objects
    come from the cache; what the comparison proves is that timestamps, version strings,
    paths and the link/compress steps are reproducible, not that gcc is.  The lab build
    itself (first CI run: empty cache) is compiled for real and is compared too.
    """
    out = []
    for name in ("a", "b"):
        top = tmp_path_factory.mktemp(f"clean-{name}")
        recipe = write_recipe(top / "r.toml", source=str(LINUX_TARBALL), build_dir=top / "kb", root=top / "root")
        proc = run_doit(f"recipe={recipe}", "kernel", cwd=top, env={"CCACHE_DIR": str(LAB_CCACHE)})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out.append((top, recipe))
    return out


@pytest.mark.slow
def test_two_clean_builds_give_the_same_bzimage(clean_builds, lab_kernel):
    shas = {sha256_file(top / "kb/obj/arch/x86/boot/bzImage") for top, _ in clean_builds}
    assert len(shas) == 1
    _, paths = lab_kernel
    assert shas == {sha256_file(paths.vmlinuz)}


@pytest.mark.slow
def test_upgrade_installs_new_kernel_and_keeps_old(clean_builds, tmp_path):
    top, recipe = clean_builds[0]
    tree = top / "kb" / "src" / "linux-source-6.1"
    # The "new" release: the same sources with another EXTRAVERSION, as a tarball whose top
    # folder has the same name (hard links keep the copy cheap; the Makefile is a new file).
    pkg = tmp_path / "pkg" / "linux-source-6.1"
    pkg.parent.mkdir()
    subprocess.run(["cp", "-al", str(tree), str(pkg.parent)], check=True)
    makefile = (pkg / "Makefile").read_text().replace("\nEXTRAVERSION =\n", "\nEXTRAVERSION = -up1\n", 1)
    (pkg / "Makefile").unlink()
    (pkg / "Makefile").write_text(makefile)
    upgrade = tmp_path / "linux-up.tar"
    subprocess.run(["tar", "-cf", str(upgrade), "-C", str(pkg.parent), "linux-source-6.1"], check=True)
    shutil.rmtree(pkg.parent)

    env = {"CCACHE_DIR": str(LAB_CCACHE)}
    first = run_doit(f"recipe={recipe}", "kernel", "grub", "vfio", cwd=top, env=env)
    assert first.returncode == 0, first.stderr
    write_recipe(recipe, source=str(upgrade), build_dir=top / "kb", root=top / "root")
    second = run_doit(f"recipe={recipe}", "kernel", "grub", "vfio", cwd=top, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for task in ("kernel:config", "kernel:build", "kernel:install", "grub", "vfio"):
        assert f".  {task}" in second.stdout, second.stdout
    boot = top / "root" / "boot"
    assert (boot / "vmlinuz-6.1.192-up1-lfs-12.2").is_file() and (boot / "vmlinuz-6.1.192-lfs-12.2").is_file()
    assert (top / "root/lib/modules/6.1.192-up1/modules.dep").is_file()
    assert (top / "root/lib/modules/6.1.192/modules.dep").is_file()
    assert (boot / "lfspass-6.1.192.json").is_file() and (boot / "lfspass-6.1.192-up1.json").is_file()
    grub_cfg = (top / "root/boot/grub/grub.cfg").read_text()
    assert "vmlinuz-6.1.192-up1-lfs-12.2" in grub_cfg and "vmlinuz-6.1.192-lfs-12.2" in grub_cfg
