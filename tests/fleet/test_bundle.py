"""Kernel bundles on the lab's real kernel: packed once, byte-identical when packed again, installed
on another root with kernel:install's safety plus its grub and vfio files, a second install changes
nothing, a bundle with one byte changed is refused before anything is written."""
from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from conftest import REPO, absolute_module_sources, assert_one_error_line, run_cli
from lfspass.fleet.bundle import META

pytestmark = pytest.mark.slow   # needs the lab kernel (conftest's lab_kernel: built once a run)


def host_recipe(top: Path, name: str) -> Path:
    """A second host: the lab recipe with its own root (nothing built there)."""
    text = (REPO / "recipes" / "lab.toml").read_text()
    text = text.replace('root = "../build/lab/root"', f'root = "{top / name}"')
    text = text.replace('build_dir = "../build/lab/kernel"', f'build_dir = "{top / "kb"}"')
    path = top / f"{name}.toml"
    path.write_text(absolute_module_sources(text))
    return path


@pytest.fixture(scope="module")
def bundle(lab_kernel, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bundles")
    proc = run_cli("bundle", "--recipe", str(REPO / "recipes" / "lab.toml"), "--out", str(out), "--json", check=True)
    return json.loads(proc.stdout)


def _listing(top: Path) -> dict[str, str]:
    return {str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(top.rglob("*"))}


def test_bundle_is_named_by_its_digest_and_packs_again_to_the_same_bytes(bundle, lab_kernel, tmp_path) -> None:
    path = Path(bundle["path"])
    _recipe, paths = lab_kernel
    assert path.name == f"lfspass-{bundle['release']}-{bundle['digest']}.tar"
    with tarfile.open(path) as tar:
        names = tar.getnames()
        raw = tar.extractfile(META).read()
        vmlinuz = tar.extractfile("kernel/vmlinuz").read()
    assert names[0] == META and hashlib.sha256(raw).hexdigest() == bundle["digest"]
    meta = json.loads(raw)
    assert set(names[1:]) == set(meta["files"])
    assert hashlib.sha256(vmlinuz).hexdigest() == hashlib.sha256(paths.vmlinuz.read_bytes()).hexdigest()
    assert "modules/updates/lfspass_hello/lfspass_hello.ko" in meta["files"]   # the external module travels too
    assert meta["config_sha256"] == hashlib.sha256(paths.config.read_bytes()).hexdigest()
    assert meta["recipe"]["devices"][0]["id"] == "1234:11e8" and meta["kconfig"]["decisions"] is not None
    again = run_cli("bundle", "--recipe", str(REPO / "recipes" / "lab.toml"), "--out", str(tmp_path), "--json", check=True)
    second = Path(json.loads(again.stdout)["path"])
    assert second.name == path.name and second.read_bytes() == path.read_bytes()


def test_install_writes_kernel_grub_vfio_then_a_second_install_changes_nothing(bundle, lab_kernel, tmp_path) -> None:
    _recipe, built = lab_kernel
    host = host_recipe(tmp_path, "gpu01")
    first = json.loads(run_cli("install", "--bundle", bundle["path"], "--recipe", str(host), "--json", check=True).stdout)
    assert first["changed"] and first["release"] == bundle["release"]
    root = tmp_path / "gpu01"
    installed = json.loads((root / "boot" / f"lfspass-{bundle['release']}.json").read_text())
    builder = json.loads(built.manifest.read_text())
    assert installed["files"] == builder["files"]          # every installed byte is the builder's
    assert installed["bundle"]["digest"] == bundle["digest"]
    cfg = (root / "boot/grub/grub.cfg").read_text()
    assert f"vmlinuz-{bundle['release']}-lfs-12.2" in cfg and "iommu=pt" in cfg
    assert "vfio-pci" in (root / "etc/modprobe.d/vfio.conf").read_text()
    before = _listing(root)
    second = run_cli("install", "--bundle", bundle["path"], "--recipe", str(host), "--json", check=True)
    assert json.loads(second.stdout)["changed"] is False
    assert _listing(root) == before
    # The host can boot it once (the fleet role's next step) and roll the whole install back.
    tried = json.loads(run_cli("boot", "try", "--release", bundle["release"], "--recipe", str(host), "--json",
                               check=True).stdout)
    status = json.loads(run_cli("boot", "status", "--recipe", str(host), "--json", check=True).stdout)
    assert status["next_boot"]["id"] == tried["tried"] and bundle["release"] in status["next_boot"]["kernel"]
    assert tried["env"]["next_entry"] == tried["tried"]
    runs = json.loads(run_cli("rollback", "--list", "--root", str(root), "--json", check=True).stdout)
    assert any(r["label"] == f"install --bundle {Path(bundle['path']).name}" for r in runs), runs


def _flip(src: Path, dst: Path, member: str) -> None:
    """Copy ``src`` to ``dst`` with one byte of ``member``'s data changed (the tar stays well-formed)."""
    with tarfile.open(src) as tar:
        offset = tar.getmember(member).offset_data
    data = bytearray(src.read_bytes())
    data[offset + 7] ^= 0x01
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["modules/updates/lfspass_hello/lfspass_hello.ko", "kernel/vmlinuz", META])
def test_one_byte_changed_is_refused_before_anything_is_written(bundle, tmp_path, member) -> None:
    src = Path(bundle["path"])
    bad_dir = tmp_path / "copy"
    bad_dir.mkdir()
    bad = bad_dir / src.name
    _flip(src, bad, member)
    host = host_recipe(tmp_path, "gpu02")
    root = tmp_path / "gpu02"
    root.mkdir()
    proc = run_cli("install", "--bundle", str(bad), "--recipe", str(host))
    line = assert_one_error_line(proc, str(bad), "not installed")
    assert (member if member != META else "digest in the bundle's name") in line
    assert proc.returncode == 1
    assert list(root.iterdir()) == []     # nothing under the host's root: not a folder, not a journal


def test_renamed_or_truncated_bundles_are_refused(bundle, tmp_path) -> None:
    src = Path(bundle["path"])
    renamed = tmp_path / "kernel.tar"
    renamed.write_bytes(src.read_bytes())
    host = host_recipe(tmp_path, "gpu03")
    assert_one_error_line(run_cli("install", "--bundle", str(renamed), "--recipe", str(host)), "carries its digest")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / src.name).write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert_one_error_line(run_cli("install", "--bundle", str(cut / src.name), "--recipe", str(host)), "copy it again")
    assert not (tmp_path / "gpu03").exists()
