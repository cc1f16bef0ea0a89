"""Refusal advice on Debian's 6.12 config: the lines it says to add make the request hold under the
kernel's own conf, and a request that cannot hold on x86_64 is told so (never "enable ARM_AMBA")."""
from __future__ import annotations

import lzma
import re
from pathlib import Path

import kconfiglib
import pytest

from conftest import TEST_CACHE
from kernel_trees import bookworm_tree
from lfspass.errors import KconfigError
from lfspass.kernel.kconfig.configure import configure
from lfspass.kernel.kconfig.kconfiglib_adapter import _load_text, _parse
from lfspass.model import Request

DEBIAN_612 = Path("/usr/src/linux-config-6.12/config.amd64_none_amd64.xz")
FAMILIES = ("drivers/vfio", "drivers/iommu", "arch/x86/kvm", "virt/")
ADD = re.compile(r"; add ((?:\w+=[nmy])(?:, \w+=[nmy])*)")
CANNOT = "; it cannot hold on x86_64: "


@pytest.fixture(scope="module")
def tree612() -> tuple[Path, str]:
    try:
        tree, _config = bookworm_tree(TEST_CACHE, "6.12")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return tree, lzma.decompress(DEBIAN_612.read_bytes()).decode()


def _refusal(tree: Path, start: Path, out: Path, req: Request) -> str:
    with pytest.raises(KconfigError) as err:
        configure(tree, out, [req], base=start)
    return err.value.one_line()


def _check_advice(tree: Path, tmp: Path, debian: str, symbol: str, value: str) -> tuple[str, str]:
    """Refuse ``symbol=value``; if the advice names lines, they must make it hold; (advice kind, message)."""
    start = tmp / "debian.config"
    start.write_text(debian)
    msg = _refusal(tree, start, tmp / f"{symbol}.config", Request(symbol, value, "test"))
    mine = msg.split(f"{symbol}={value} (from test) refused", 1)[1].split("(from test) refused", 1)[0]
    assert "enable " not in mine, msg
    added = ADD.search(mine)
    if added is None:
        assert CANNOT in mine, msg
        return "cannot", msg
    lines = [Request(*pair.split("="), "advice") for pair in added.group(1).split(", ")]
    out = tmp / f"{symbol}-fixed.config"
    configure(tree, out, [Request(symbol, value, "test"), *lines], base=start)   # raises if it does not hold
    text = out.read_text()
    assert f"CONFIG_{symbol}={value}\n" in text, f"{symbol}={value} with {added.group(1)}"
    return "add", msg


# The cases the issue named: a promptless ARM-only symbol, a promptless KVM_X86 behind KVM, a bus
# of another arch, a switch that must go off once another is on, and one that is simply missing.
@pytest.mark.parametrize("symbol, value, kind, words", [
    ("VFIO_AMBA", "m", "cannot", "ARM_AMBA has no prompt"),
    ("VFIO_CDX", "m", "cannot", "ARM64 is not defined for x86_64"),
    ("KVM_INTEL", "y", "add", "add KVM=y"),
    ("IOMMUFD_VFIO_CONTAINER", "y", "add", "add IOMMUFD=m, VFIO_CONTAINER=n"),
    ("VFIO_DEVICE_CDEV", "y", "add", "add IOMMUFD=m"),
])
def test_advice_is_possible_or_says_it_is_not(tree612, tmp_path: Path, symbol: str, value: str, kind: str,
                                              words: str) -> None:
    tree, debian = tree612
    got, msg = _check_advice(tree, tmp_path, debian, symbol, value)
    assert got == kind and words in msg, msg


@pytest.mark.slow
def test_every_refusal_in_the_vfio_iommu_kvm_families(tree612, tmp_path: Path) -> None:
    """Every promptable VFIO / IOMMU / KVM switch Debian's 6.12 config leaves off, asked =y: either the
    advice's lines make it hold under the kernel's conf, or it says it cannot hold on x86_64."""
    tree, debian = tree612
    kconf, _meta = _parse(tree, "x86_64")
    _load_text(kconf, debian)
    refused = [s.name for s in kconf.unique_defined_syms
               if s.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE) and any(n.prompt for n in s.nodes)
               and any(n.filename.startswith(FAMILIES) for n in s.nodes) and s.tri_value < 2 and 2 not in s.assignable]
    assert len(refused) > 40, refused
    kinds = {name: _check_advice(tree, tmp_path, debian, name, "y")[0] for name in refused}
    assert list(kinds.values()).count("add") >= 10, kinds
    assert kinds["VFIO_PLATFORM"] == kinds["ARM_SMMU"] == "cannot"
