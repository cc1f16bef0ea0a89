"""Recipe text reaches grub.cfg as GRUB's lexer needs it: values stay values, never commands.

Each case goes through `doit grub` (which runs the real grub-script-check before writing),
then the written file is checked again with grub-script-check and its entry read back.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import assert_one_error_line, run_doit
from hostcases import write_case

from lfspass.boot.grub import parse_entries
from lfspass.boot.blockfile import read_block

HOSTILE = [
    "quiet; echo pwned",                  # a second command after ';'
    'x" --unrestricted "',                # a quote that would end the word
    "$prefix/../evil",                    # a GRUB variable
    "it's",                               # a single quote
    'dyndbg="file vfio_pci.c +p"',        # the kernel's own quoting of a value with spaces
    "a|b&c<d>e{f}#g",                     # GRUB's other metacharacters
    "\\",                                 # a lone backslash
]


def _recipe(tmp_path: Path, boot_lines: str) -> Path:
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    recipe.write_text(recipe.read_text().replace("[boot]\n", f"[boot]\n{boot_lines}\n", 1))
    return recipe


def _written_entry(tmp_path: Path, recipe: Path):
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = tmp_path / "root/boot/grub/grub.cfg"
    check = subprocess.run(["grub-script-check", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    (entry,) = parse_entries(read_block(cfg))
    return entry


@pytest.mark.parametrize("value", HOSTILE)
def test_a_cmdline_value_is_one_kernel_parameter(tmp_path: Path, value: str) -> None:
    entry = _written_entry(tmp_path, _recipe(tmp_path, f"cmdline = [{json.dumps(value)}, \"loglevel=4\"]"))
    i = entry.params.index(value)                  # the literal string, as one word
    assert entry.params[i + 1] == "loglevel=4"     # and the next parameter still follows it
    linux_lines = [line for line in entry.text.splitlines() if line.strip().startswith("linux")]
    assert len(linux_lines) == 1 and not any(line.strip().startswith("echo") for line in entry.text.splitlines())


@pytest.mark.parametrize("value", HOSTILE)
def test_a_title_stays_the_menu_title(tmp_path: Path, value: str) -> None:
    entry = _written_entry(tmp_path, _recipe(tmp_path, f"title = {json.dumps('T10 ' + value)}"))
    assert entry.title == "T10 " + value
    menu = next(line for line in entry.text.splitlines() if line.startswith("menuentry"))
    assert "--unrestricted" not in menu.replace('\\"', "").split('"', 2)[-1]   # nothing after the title's end


def test_plain_values_are_written_bare(tmp_path: Path) -> None:
    """No quotes where none are needed: what a user reads in grub.cfg stays the usual form."""
    entry = _written_entry(tmp_path, _recipe(tmp_path, 'cmdline = ["console=ttyS0,115200n8", "iommu=pt"]'))
    linux = next(line for line in entry.text.splitlines() if line.strip().startswith("linux"))
    assert {"console=ttyS0,115200n8", "iommu=pt"} <= set(linux.split()) and "'" not in linux


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("cmdline", ["quiet\necho pwned"], "control character"),
    ("title", "two\nlines", "control character"),
    ("fs_uuid", "81368941 --set=root; echo", "boot.fs_uuid"),
    ("initrd", "/boot/initrd.img; echo", "boot.initrd"),
])
def test_what_cannot_be_quoted_is_refused(tmp_path: Path, key: str, value, needle: str) -> None:
    boot_lines = f"{key} = {json.dumps(value)}"
    recipe = write_case(tmp_path, "intel-sysvinit-module")
    text = recipe.read_text()
    if key == "fs_uuid":
        text = "\n".join(line for line in text.splitlines() if not line.startswith("fs_uuid")) + "\n"
    recipe.write_text(text.replace("[boot]\n", f"[boot]\n{boot_lines}\n", 1))
    proc = run_doit(f"recipe={recipe}", "grub", cwd=tmp_path)
    assert_one_error_line(proc, needle)
    assert not (tmp_path / "root/boot/grub/grub.cfg").exists()
