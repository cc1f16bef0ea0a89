"""Out-of-tree modules ([[kernel.external_modules]]): the recipe keys, the task graph, what makes
kernel:external run again, the copy it builds in; real kbuild builds against the lab kernel (slow)."""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import LINUX_TARBALL, REPO, absolute_module_sources, assert_one_error_line, run_doit
from lfspass.errors import BuildError, InputError, RecipeError
from lfspass.fsutil import sha256_file
from lfspass.recipe import load_recipe

LAB = REPO / "recipes" / "lab.toml"
LAB_BUILD = REPO / "build" / "lab" / "kernel"
HELLO = REPO / "recipes" / "external" / "lfspass_hello"
UNEXPORTED = REPO / "tests" / "kernel" / "external" / "lfspass_unexported"


def lab_variant(top: Path, *, modules: str, source: str = str(LINUX_TARBALL), build_dir: Path | None = None) -> Path:
    """recipes/lab.toml with its own root under ``top``, its module table replaced by ``modules``."""
    text = absolute_module_sources(LAB.read_text())
    head, rest = text.split("[[kernel.external_modules]]\n", 1)
    text = head + modules + rest[rest.index("\n[boot]"):]
    text = text.replace('root = "../build/lab/root"', f'root = "{top / "root"}"')
    text = text.replace('source = "/usr/src/linux-source-6.1.tar.xz"', f'source = "{source}"')
    text = text.replace('build_dir = "../build/lab/kernel"', f'build_dir = "{build_dir or LAB_BUILD}"')
    path = top / "lab.toml"
    path.write_text(text)
    return path


def module_table(name: str, source: Path | str, make_args: str = "") -> str:
    return f'[[kernel.external_modules]]\nname = "{name}"\nsource = "{source}"\n{make_args}'


# ---------------------------------------------------------------- fast: the recipe keys
@pytest.mark.parametrize(("table", "needles"), [
    ('name = "../evil"\nsource = "m"\n', ["kernel.external_modules[0].name", "'../evil'", "1-55 letters"]),
    ('name = "-x"\nsource = "m"\n', ["kernel.external_modules[0].name", "'-x'"]),
    ('name = "m"\nsource = "m"\nmake_args = ["FOO=$(shell id)"]\n',
     ["kernel.external_modules[0].make_args[0]", "$(shell id)", "VAR=value"]),
    ('name = "m"\nsource = "m"\nmake_args = ["FOO=a b"]\n', ["make_args[0]", "'FOO=a b'"]),
    ('name = "m"\nsource = "m"\nmake_args = ["--silent"]\n', ["make_args[0]", "--silent"]),
    ('name = "m"\nsource = "m"\nmake_args = ["M=/tmp/elsewhere"]\n', ["make_args[0]", "M is lfspass's to set"]),
    ('name = "m"\nsource = "m"\nmake_args = "FOO=1"\n', ["make_args", "expected a list of strings"]),
    ('name = "m"\nsoruce = "m"\n', ["unknown key 'kernel.external_modules[0].soruce'", "did you mean 'source'"]),
    ('name = "m"\n', ["needs key 'source'"]),
    ('source = "m"\n', ["needs key 'name'"]),
    ('name = "m"\nsource = "m"\n[[kernel.external_modules]]\nname = "m"\nsource = "n"\n',
     ["kernel.external_modules[1].name = 'm'", "external_modules[0] has this name too"]),
])
def test_bad_module_table_is_one_error_line(tmp_path: Path, table: str, needles: list[str]) -> None:
    recipe = lab_variant(tmp_path, modules="[[kernel.external_modules]]\n" + table)
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    for needle in needles:
        assert needle in err.value.one_line(), err.value.one_line()
    proc = run_doit(f"recipe={recipe}", "kernel", cwd=tmp_path)   # as a user meets it: nothing runs
    assert_one_error_line(proc, "lab.toml", needles[0])
    assert not (tmp_path / "root").exists()


def test_module_source_is_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "mods").mkdir()
    recipe = lab_variant(tmp_path, modules=module_table("kvmfr", "mods/kvmfr", 'make_args = ["CONFIG_X=y"]\n'))
    (mod,) = load_recipe(recipe).kernel.external_modules
    assert (mod.name, mod.source, mod.make_args) == ("kvmfr", str(tmp_path / "mods/kvmfr"), ["CONFIG_X=y"])
    assert load_recipe(LAB).kernel.external_modules[0].source == str(HELLO)


# ---------------------------------------------------------------- fast: the task graph
def _tasks(recipe: Path) -> dict[str, dict]:
    from lfspass.graph import load_context
    from lfspass.kernel.tasks import kernel_tasks

    return {t["name"]: t for t in kernel_tasks(load_context(str(recipe)))}


def test_install_waits_for_the_external_modules(tmp_path: Path, linux_tree: Path) -> None:
    recipe = lab_variant(tmp_path, modules=module_table("lfspass_hello", HELLO), source=str(linux_tree),
                         build_dir=tmp_path / "kb")
    tasks = _tasks(recipe)
    assert list(tasks) == ["config", "build", "external", "install"]
    ext, build, install = tasks["external"], tasks["build"], tasks["install"]
    stamp = str(tmp_path / "kb/external/lfspass_hello.json")
    assert ext["targets"] == [stamp] and stamp in install["file_dep"]          # install after external
    assert set(build["targets"]) & set(ext["file_dep"]) == {str(tmp_path / "kb/build.json")}  # external after build
    # doit itself agrees: `doit kernel:install` alone would run external first (R = to run).
    status = run_doit(f"recipe={recipe}", "list", "--all", "--status", "kernel", cwd=tmp_path)
    assert "R kernel:external" in status.stdout, status.stdout + status.stderr
    # A recipe without external modules keeps the three tasks it had.
    plain = lab_variant(tmp_path, modules="", source=str(linux_tree), build_dir=tmp_path / "kb")
    assert list(_tasks(plain)) == ["config", "build", "install"]


def test_what_makes_the_module_build_again(tmp_path: Path, linux_tree: Path) -> None:
    from lfspass.graph import load_context
    from lfspass.kernel.external import ExternalModules, source_digest
    from lfspass.kernel.tasks import KernelJob

    src = tmp_path / "hello"
    shutil.copytree(HELLO, src)
    digest = source_digest(src)
    os.utime(src / "lfspass_hello.c", (1, 1))
    (src / "lfspass_hello.o").write_bytes(b"\x7fELF")            # a build by hand in the user's folder
    (src / ".lfspass_hello.o.cmd").write_text("cmd\n")
    assert source_digest(src) == digest                          # mtimes and build products: nothing to do
    (src / "lfspass_hello.c").write_text((src / "lfspass_hello.c").read_text() + "/* edited */\n")
    assert source_digest(src) != digest                          # the content: build again
    (src / "extra.h").write_text("")
    assert source_digest(src) not in (digest, source_digest(HELLO))
    assert source_digest(tmp_path / "nowhere") == "missing"

    def inputs(make_args: str) -> dict:
        recipe = lab_variant(tmp_path, modules=module_table("hello", src, make_args), source=str(linux_tree),
                             build_dir=tmp_path / "kb")
        return ExternalModules(KernelJob(load_context(str(recipe)))).inputs()

    assert inputs("") == inputs("")
    assert inputs("") != inputs('make_args = ["CONFIG_HELLO_DEBUG=y"]\n')
    # The last build must still be in the build folder, byte for byte.
    ext = ExternalModules(KernelJob(load_context(str(lab_variant(
        tmp_path, modules=module_table("hello", src), source=str(linux_tree), build_dir=tmp_path / "kb")))))
    assert not ext.built_ok()                                    # never built
    copy = tmp_path / "kb/external/hello"
    copy.mkdir(parents=True)
    (copy / "lfspass_hello.ko").write_bytes(b"ko")
    (tmp_path / "kb/external/hello.json").write_text(json.dumps({"modules": {"lfspass_hello.ko": sha256_file(copy / "lfspass_hello.ko")}}))
    assert ext.built_ok()
    (copy / "lfspass_hello.ko").write_bytes(b"ko, changed")
    assert not ext.built_ok()


# ---------------------------------------------------------------- fast: the copy kbuild builds in
def _spec(source: Path, name: str = "m"):
    from lfspass.recipe import ExternalModuleSpec

    return ExternalModuleSpec(name=name, source=str(source))


def test_a_folder_is_copied_without_build_products(tmp_path: Path) -> None:
    from lfspass.kernel.external import prepare_copy

    src = tmp_path / "src"
    shutil.copytree(HELLO, src)
    (src / "lfspass_hello.ko").write_bytes(b"old build")
    (src / ".git").mkdir()
    (src / "include").mkdir()
    (src / "include/h.h").write_text("#define X 1\n")
    dest = tmp_path / "b/external/m"
    prepare_copy(_spec(src), "r.toml: kernel.external_modules[0]", dest)
    assert sorted(p.name for p in dest.rglob("*")) == ["Kbuild", "Makefile", "h.h", "include", "lfspass_hello.c"]
    (dest / "stale.o").write_text("x")
    prepare_copy(_spec(src), "w", dest)                          # a rebuild starts from a fresh copy
    assert not (dest / "stale.o").exists() and (src / "lfspass_hello.ko").read_bytes() == b"old build"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]   # no temporary left


def test_a_tarball_is_unpacked_and_unsafe_members_refused(tmp_path: Path) -> None:
    from lfspass.kernel.external import prepare_copy

    good = tmp_path / "hello-1.0.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        tf.add(HELLO, arcname="hello-1.0")
    dest = tmp_path / "b/external/m"
    prepare_copy(_spec(good), "w", dest)
    assert (dest / "Kbuild").read_text() == (HELLO / "Kbuild").read_text()   # the one top folder is the module
    for name, member in (("dotdot", "../evil.c"), ("absolute", "/tmp/evil.c")):
        bad = tmp_path / f"{name}.tar"
        with tarfile.open(bad, "w") as tf:
            tf.add(HELLO / "Kbuild", arcname="Kbuild")
            info = tarfile.TarInfo(member)
            tf.addfile(info)
        out = tmp_path / f"b/external/{name}"
        with pytest.raises(InputError, match=rf"member {member}.*outside the module's folder.*nothing was unpacked"):
            prepare_copy(_spec(bad, name), "w", out)
        assert not out.exists()
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("m/escape")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(InputError, match="m/escape"):
        prepare_copy(_spec(link, "link"), "w", tmp_path / "b/external/link")
    with pytest.raises(RecipeError, match="no such folder or tarball"):
        prepare_copy(_spec(tmp_path / "nowhere"), "r.toml: kernel.external_modules[0]", dest)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RecipeError, match="neither a folder nor a tarball"):
        prepare_copy(_spec(tmp_path / "notes.txt"), "w", dest)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="no Kbuild or Makefile"):
        prepare_copy(_spec(tmp_path / "empty"), "w", dest)


def test_first_error_is_the_compiler_or_modpost_line(tmp_path: Path) -> None:
    from lfspass.kernel.external import first_error

    copy = tmp_path / "external/m"
    log = tmp_path / "m.log"
    log.write_text(f"  CC [M]  {copy}/m.o\n  MODPOST {copy}/Module.symvers\n"
                   f'ERROR: modpost: "saved_command_line" [{copy}/m.ko] undefined!\n'
                   "make[2]: *** [scripts/Makefile.modpost:126: Module.symvers] Error 1\n"
                   "make[1]: *** [Makefile:1989: modpost] Error 2\n")
    assert first_error(log, copy) == 'ERROR: modpost: "saved_command_line" [m.ko] undefined!'
    log.write_text(f"{copy}/m.c:3:1: error: unknown type name 'foo'\n{copy}/m.c:9:2: error: expected ';'\n"
                   "make[1]: *** Error 2\n")
    assert first_error(log, copy) == "m.c:3:1: error: unknown type name 'foo'"


# ---------------------------------------------------------------- slow: real kbuild, the lab kernel
@pytest.mark.slow
def test_lab_module_is_built_installed_under_updates_and_in_the_manifest(lab_kernel) -> None:
    _recipe, paths = lab_kernel
    release = paths.modules_dir.name
    ko = paths.modules_dir / "updates/lfspass_hello/lfspass_hello.ko"
    assert ko.is_file()
    assert "updates/lfspass_hello/lfspass_hello.ko:" in paths.modules_dep.read_text()
    assert b"vermagic=" + release.encode() + b" " in ko.read_bytes()   # built against this kernel
    man = json.loads(paths.manifest.read_text())
    (entry,) = man["external_modules"]
    rel = f"lib/modules/{release}/updates/lfspass_hello/lfspass_hello.ko"
    assert entry["name"] == "lfspass_hello" and entry["source"] == str(HELLO)
    assert entry["files"] == {rel: sha256_file(ko)} and man["files"][rel] == sha256_file(ko)
    assert entry["source_digest"].startswith("tree:") and entry["make_args"] == [] and entry["signed"] is False
    # Built in the build folder's copy, never in the recipe's folder.
    assert (LAB_BUILD / "external/lfspass_hello/lfspass_hello.ko").is_file()
    assert not [p for p in HELLO.iterdir() if p.suffix in (".o", ".ko") or p.name.endswith(".cmd")]
    again = run_doit(f"recipe={LAB}", "kernel", cwd=REPO)
    assert again.returncode == 0 and "-- kernel:external" in again.stdout and "-- kernel:install" in again.stdout, \
        again.stdout + again.stderr


@pytest.mark.slow
def test_failing_module_stops_doit_kernel_before_install(lab_kernel, tmp_path: Path) -> None:
    """The acceptance: the module that fails at modpost (an unexported symbol) is named with that error,
    kernel:install never runs and nothing is written under the root."""
    recipe = lab_variant(tmp_path, modules=module_table("lfspass_unexported", UNEXPORTED))
    proc = run_doit(f"recipe={recipe}", "kernel", "grub", "vfio", cwd=tmp_path)
    line = assert_one_error_line(proc, "external module lfspass_unexported", "does not build against kernel 6.1.",
                                 'ERROR: modpost: "saved_command_line" [lfspass_unexported.ko] undefined!',
                                 "the kernel is not installed", str(LAB_BUILD / "external/lfspass_unexported.log"))
    assert "full log:" in line
    assert ".  kernel:external" in proc.stdout and ".  kernel:install" not in proc.stdout
    assert not (tmp_path / "root").exists()
    assert "undefined!" in (LAB_BUILD / "external/lfspass_unexported.log").read_text()
    assert not (LAB_BUILD / "external/lfspass_unexported.json").exists()   # no stamp: install cannot use it
    # The same again: it fails again (a failed build is never taken as done).
    proc = run_doit(f"recipe={recipe}", "kernel", cwd=tmp_path)
    assert_one_error_line(proc, "external module lfspass_unexported", "undefined!")


@pytest.mark.slow
def test_external_reruns_on_source_and_make_args_only(lab_kernel, tmp_path: Path) -> None:
    """Its own module (a copy of the lab's, named apart) against the lab's build: nothing to do twice;
    a touched file nothing either; an edited one or new make_args build it again."""
    src = tmp_path / "hello"
    shutil.copytree(HELLO, src)
    recipe = lab_variant(tmp_path, modules=module_table("hello_copy", src))
    first = run_doit(f"recipe={recipe}", "kernel", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (tmp_path / "root/lib/modules").is_dir()
    (installed,) = (tmp_path / "root/lib/modules").glob("*/updates/hello_copy/lfspass_hello.ko")

    def ran() -> list[str]:
        proc = run_doit(f"recipe={recipe}", "kernel", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return [line[3:] for line in proc.stdout.splitlines() if line.startswith(".  ")]

    assert ran() == []
    os.utime(src / "lfspass_hello.c", (2, 2))
    assert ran() == []
    (src / "lfspass_hello.c").write_text((src / "lfspass_hello.c").read_text().replace("goodbye", "bye"))
    assert ran() == ["kernel:external", "kernel:install"]        # another .ko: installed again
    assert b"lfspass_hello: bye" in installed.read_bytes()
    recipe.write_text(recipe.read_text().replace(f'source = "{src}"\n', f'source = "{src}"\nmake_args = ["LFSPASS_X=1"]\n'))
    assert ran()[:1] == ["kernel:external"]
    man = json.loads(next((tmp_path / "root/boot").glob("lfspass-*.json")).read_text())
    assert man["external_modules"][0]["make_args"] == ["LFSPASS_X=1"]
