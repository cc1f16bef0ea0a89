"""The disk tools both disk builders share: the ESP (the image guest's and the lab's) and the tool runner."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from lfspass.errors import ToolFailed
from lfspass.lab.boot_disk import grub_esp
from lfspass.vm.disk_tools import run_tool
from lfspass.vm.image.disk import ESP_MIB, Ids, grub_image, guest_esp

UUID = "5e1f0c7a-1ab0-4c1b-9d2e-1ab000000001"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dir(img: Path, folder: str) -> str:
    return subprocess.run(["mdir", "-b", "-i", str(img), folder], capture_output=True, text=True, check=True,
                          env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout


def _file(img: Path, name: str) -> bytes:
    return subprocess.run(["mtype", "-i", str(img), name], capture_output=True, check=True,
                          env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout


def test_image_guest_esp_is_the_same_bytes_every_build(tmp_path):
    """Fixed volume id and clock: two ESPs of one VM are identical, and hold GRUB where UEFI looks."""
    ids = Ids.for_vm("lab-image")
    with open(tmp_path / "build.log", "w") as log:
        grub_image(tmp_path / "BOOTX64.EFI", ids.root_fs, log)
        a, b = tmp_path / "a.img", tmp_path / "b.img"
        guest_esp(a, tmp_path / "BOOTX64.EFI", ids, 1704067200, log)
        guest_esp(b, tmp_path / "BOOTX64.EFI", ids, 1704067200, log)
    assert _sha(a) == _sha(b) and a.stat().st_size == ESP_MIB << 20
    assert _file(a, "::/EFI/BOOT/BOOTX64.EFI") == (tmp_path / "BOOTX64.EFI").read_bytes()
    label = subprocess.run(["mlabel", "-s", "-i", str(a), "::"], capture_output=True, text=True,
                           env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert "EFI" in label
    assert "$ " in (tmp_path / "build.log").read_text()  # every tool's command line is in the build log


def test_lab_esp_holds_grub_and_is_kept_until_the_uuid_changes(tmp_path):
    esp = grub_esp(tmp_path / "esp.img", UUID)
    assert esp.stat().st_size == 16 << 20 and "BOOTX64.EFI" in _dir(esp, "::/EFI/BOOT")
    assert _file(esp, "::/EFI/BOOT/BOOTX64.EFI")[:2] == b"MZ"   # a PE/COFF binary, as UEFI loads
    before = esp.stat().st_mtime_ns
    assert grub_esp(tmp_path / "esp.img", UUID).stat().st_mtime_ns == before
    grub_esp(tmp_path / "esp.img", UUID.replace("0001", "0002"))
    assert (tmp_path / "esp.uuid").read_text().endswith("0002")
    assert not list(tmp_path.glob("tmp*"))  # the build folder is gone


def test_a_failing_tool_is_exit_3_naming_its_words_and_the_log(tmp_path):
    with open(tmp_path / "build.log", "w") as log, pytest.raises(ToolFailed) as err:
        run_tool(["mkfs.vfat", "-C", str(tmp_path / "x.img"), "0"], "mkfs.vfat", log, hint="; try again")
    line = err.value.one_line()
    assert err.value.exit_code == 3 and line.startswith("mkfs.vfat failed: mkfs.vfat said: ")
    assert line.endswith(f"full log: {tmp_path / 'build.log'}; try again"), line
    assert "$ mkfs.vfat -C" in (tmp_path / "build.log").read_text()
    # Without a log, the tool's stderr is the message and stdout stays the answer alone.
    with pytest.raises(ToolFailed, match="No such file") as err:
        run_tool(["dumpe2fs", "-h", str(tmp_path / "missing.img")], "dumpe2fs")
    assert run_tool(["sh", "-c", "echo answer; echo noise >&2"], "sh") == "answer\n"
