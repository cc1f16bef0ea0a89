"""Install safety: a reinstall keeps the previous build of the release (files, modules, manifest) and
GRUB's fallback entry boots it; kill -9 at any moment of install + grub + vfio leaves a complete kernel."""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, absolute_module_sources
from lfspass.kernel.install import complete_manifest

LAB = REPO / "recipes" / "lab.toml"
RELEASE = "6.1.999"

# A stand-in for `doit kernel:install grub vfio` on the lab recipe: the same functions those
# tasks run, on a fake build (a few hundred module files, made by a fake `make modules_install`)
# so that a kill lands inside the install often and the test needs no compiler.
DRIVER = r'''
import sys, os
from pathlib import Path
import lfspass.kernel.install as inst
from lfspass.kernel.build import BuildLayout
from lfspass.recipe import load_recipe
from lfspass.plan import build_plan, kernel_paths

recipe_file, tag, release, nmods = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
recipe = load_recipe(recipe_file)
lay = BuildLayout(Path(recipe.kernel.build_dir) / tag)
lay.obj.mkdir(parents=True, exist_ok=True)
lay.bzimage.parent.mkdir(parents=True, exist_ok=True)
lay.bzimage.write_bytes(b"bzImage " + tag.encode() * 4096)
lay.system_map.write_text(f"ffffffff81000000 T _text {tag}\n")
lay.config.write_text(f"CONFIG_64BIT=y\nCONFIG_MODULES=y\nCONFIG_VFIO_PCI=m\nCONFIG_LOCALVERSION=\"{tag}\"\n")
(lay.obj / "modules.builtin").write_text("")

def fake_make(cmd, env, log, *a, **k):
    dest = Path(next(c.split("=", 1)[1] for c in cmd if c.startswith("INSTALL_MOD_PATH="))) / "lib/modules" / release
    (dest / "kernel").mkdir(parents=True, exist_ok=True)
    names = [f"kernel/m{i}.ko" for i in range(nmods)] + ["kernel/vfio-pci.ko"]
    for n in names:
        (dest / n).write_bytes((tag + n).encode() * 512)
    (dest / "modules.dep").write_text("".join(f"{n}:\n" for n in names))
    (dest / "modules.builtin").write_text("")
inst.run_make = fake_make
print("ready", flush=True)
paths = kernel_paths(recipe, release)
inst.install_kernel(recipe.root, paths, release, Path("/nonexistent"), lay, jobs=1, env={}, make_vars=[],
                    docs=False, inputs={"tag": tag})
from lfspass.boot.grub import write_grub
from lfspass.boot.vfio import write_vfio
plan = build_plan(recipe, release)
write_grub(plan)
write_vfio(plan)
print("done", flush=True)
'''


def lab_recipe(top: Path, root: Path) -> Path:
    text = LAB.read_text().replace('root = "../build/lab/root"', f'root = "{root}"')
    text = text.replace('build_dir = "../build/lab/kernel"', f'build_dir = "{top / "kb"}"')
    path = top / "lab.toml"
    path.write_text(absolute_module_sources(text))
    return path


def driver(top: Path, recipe: Path, tag: str, nmods: int = 300) -> subprocess.Popen:
    script = top / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(script), str(recipe), tag, RELEASE, str(nmods)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_driver(top: Path, recipe: Path, tag: str) -> None:
    proc = driver(top, recipe, tag)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err


def complete_builds(root: Path) -> dict[str, str]:
    """manifest name -> tag of each complete kernel (all files present, sha256 as listed)."""
    out = {}
    for man in sorted((root / "boot").glob("lfspass-*.json")):
        data = complete_manifest(root, man)
        if data is None:
            continue
        listed = data["files"]
        need = [r for r in listed if Path(r).name.startswith(("vmlinuz-", "System.map-", "config-"))]
        assert len(need) == 3 and any(r.endswith("/modules.dep") for r in listed), listed
        out[man.name] = data["tag"]
    return out


def test_reinstall_same_release_keeps_previous_build_and_grub_falls_back_to_it(tmp_path):
    root = tmp_path / "root"
    recipe = lab_recipe(tmp_path, root)
    run_driver(tmp_path, recipe, "A")
    run_driver(tmp_path, recipe, "B")  # the same release, another config: the commonest rebuild
    boot = root / "boot"
    assert (boot / f"config-{RELEASE}").read_text().endswith('"B"\n')
    assert (boot / f"config-{RELEASE}.old").read_text().endswith('"A"\n')
    assert (boot / f"vmlinuz-{RELEASE}-lfs-12.2.old").read_bytes().startswith(b"bzImage A")
    assert (boot / f"System.map-{RELEASE}.old").read_text().endswith("A\n")
    assert (root / f"lib/modules/{RELEASE}.old/kernel/m0.ko").read_bytes().startswith(b"Akernel/m0.ko")
    assert (root / f"lib/modules/{RELEASE}/kernel/m0.ko").read_bytes().startswith(b"Bkernel/m0.ko")
    assert complete_builds(root) == {f"lfspass-{RELEASE}.json": "B", f"lfspass-{RELEASE}.old.json": "A"}
    cfg = (boot / "grub/grub.cfg").read_text()
    # The fallback entry names the kept files, and GRUB's fallback variable points at it.
    new_at = cfg.index(f"linux   /boot/vmlinuz-{RELEASE}-lfs-12.2 ")
    old_at = cfg.index(f"linux   /boot/vmlinuz-{RELEASE}-lfs-12.2.old ")
    assert new_at < old_at and "(previous build)" in cfg[new_at:]
    fallback = cfg.split('set fallback="', 1)[1].split('"', 1)[0]
    assert f"--id {fallback} " in cfg[new_at:] and cfg.index(f"--id {fallback} ") < old_at
    subprocess.run(["grub-script-check", str(boot / "grub/grub.cfg")], check=True)
    # A third build: the kept copy is now B, A is gone; the entries follow.
    run_driver(tmp_path, recipe, "C")
    assert complete_builds(root) == {f"lfspass-{RELEASE}.json": "C", f"lfspass-{RELEASE}.old.json": "B"}
    cfg = (boot / "grub/grub.cfg").read_text()
    assert cfg.count("menuentry ") == 2 and cfg.count(".old ") == 1
    # Same build again: nothing changes, nothing is copied aside.
    before = {p: p.stat().st_mtime_ns for p in boot.rglob("*") if p.is_file()}
    run_driver(tmp_path, recipe, "C")
    assert {p: p.stat().st_mtime_ns for p in boot.rglob("*") if p.is_file()} == before


def test_replacing_the_running_release_warns_with_the_kept_copy(tmp_path, capsys):
    from lfspass.kernel.build import BuildLayout
    from lfspass.kernel.install import install_kernel
    from lfspass.plan import kernel_paths
    from lfspass.recipe import load_recipe

    recipe = load_recipe(lab_recipe(tmp_path, tmp_path / "root"))
    paths = kernel_paths(recipe, RELEASE)
    for tag in ("A", "B"):
        lay = BuildLayout(tmp_path / tag)
        lay.bzimage.parent.mkdir(parents=True)
        lay.bzimage.write_bytes(tag.encode())
        lay.system_map.write_text(tag)
        lay.config.write_text(f"# CONFIG_MODULES is not set\nCONFIG_X=\"{tag}\"\n")
        install_kernel(recipe.root, paths, RELEASE, tmp_path, lay, jobs=1, env={}, make_vars=[], docs=False,
                       inputs={}, running=RELEASE)
    err = capsys.readouterr().err
    assert f"replacing the files of the running kernel {RELEASE}" in err
    assert f"vmlinuz-{RELEASE}-lfs-12.2.old" in err


@pytest.mark.slow
def test_kill_9_during_install_grub_vfio_always_leaves_a_complete_kernel(tmp_path):
    """SIGKILL at random moments of install + grub + vfio (lab recipe, 24 trials): old or new is complete."""
    template = tmp_path / "template"
    template.mkdir()
    recipe = lab_recipe(template, template / "root")
    run_driver(template, recipe, "A")
    # How long the install itself takes (after imports), to spread the kills over it.
    trial = tmp_path / "timing"
    shutil.copytree(template, trial, symlinks=True)
    proc = driver(trial, lab_recipe(trial, trial / "root"), "B")
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.communicate(timeout=120)
    span = time.monotonic() - t0
    rng = random.Random(12)
    seen = {"before the kept copy": 0, "new one incomplete": 0, "both complete": 0}
    # Kills are spread over the measured span; a loaded machine can make one trial slower than
    # the timing run, so after each round of 24 the spread widens (or narrows) until kills have
    # landed before, inside and after the dangerous part (at most 3 rounds).
    scale, n = 1.25, 0
    while n < 24 or (not all(seen.values()) and n < 72):
        if n and n % 24 == 0:
            scale *= 2.0 if not seen["both complete"] else 0.5 if not seen["before the kept copy"] else 1.0
        top = tmp_path / f"t{n}"
        shutil.copytree(template, top, symlinks=True)
        recipe_n = lab_recipe(top, top / "root")
        proc = driver(top, recipe_n, "B")
        assert proc.stdout.readline().strip() == "ready"
        # Stratified: trial n dies at a random moment of the n-th 24th of the job.
        time.sleep((n % 24 + rng.random()) / 24 * span * scale)
        proc.kill()
        proc.communicate()
        builds = set(complete_builds(top / "root").values())
        assert builds & {"A", "B"}, f"trial {n}: no complete kernel after kill -9 at this moment"
        kept = (top / f"root/boot/lfspass-{RELEASE}.old.json").exists()
        seen["both complete" if builds == {"A", "B"} else "new one incomplete" if kept else "before the kept copy"] += 1
        # Running the interrupted job again finishes it: the new build installed, the old one kept.
        run_driver(top, recipe_n, "B")
        assert set(complete_builds(top / "root").values()) == {"A", "B"}, n
        subprocess.run(["grub-script-check", str(top / "root/boot/grub/grub.cfg")], check=True)
        shutil.rmtree(top)
        n += 1
    print(f"kill -9 trials: {n} (install span {span:.2f} s, final spread x{scale}): {seen}")
    assert all(seen.values()), seen  # kills landed before, inside and after the dangerous part
