"""Recipes for the host-side golden tests (grub block, vfio.conf, autoload files)."""
from __future__ import annotations

from pathlib import Path

SEED_UUIDS = """
[boot]
fs_uuid = "81368941-bd96-4539-bf8e-7215d532a872"
root_partuuid = "cf8d6f20-92bf-4f81-982e-50bea63e6ca3"
microcode = "/boot/microcode.img"
"""

CASES = {
    # The seed's host, fixed: Intel, sysvinit LFS, VFIO as modules, T10 by id.
    "intel-sysvinit-module": f"""
[host]
root = "root"
init = "sysvinit"
cpu_vendor = "intel"
[kernel]
version = "6.10.5"
vfio = "module"
{SEED_UUIDS}
[[devices]]
id = "10de:1e37"
""",
    # T10 + P10 on one Intel host, systemd book, VFIO built in: ids on the command line.
    "intel-systemd-builtin": f"""
[host]
root = "root"
init = "systemd"
cpu_vendor = "intel"
[kernel]
version = "6.10.5"
vfio = "builtin"
{SEED_UUIDS}
[[devices]]
id = "10de:1e37"
[[devices]]
id = "10de:1b39"
""",
    # AMD host: never amd_iommu=on; a bridge VM adds tun to the autoload list.
    "amd-sysvinit-module": """
[host]
root = "root"
init = "sysvinit"
cpu_vendor = "amd"
[kernel]
version = "6.1.100"
lfs_version = "12.0"
vfio = "module"
[boot]
fs_uuid = "3b7a1c52-7d1e-4f0e-9a57-2f4c7f1b0a11"
root_partuuid = "9d0c4e2a-5b1f-4c3d-8e7a-6f5b4a3c2d1e"
cmdline = ["quiet"]
[[devices]]
id = "1002:73bf"
[[vms]]
name = "win"
network = "bridge"
devices = ["1002:73bf"]
""",
    # AMD host on the systemd book with VFIO built in and an older kernel (vfio_virqfd era).
    "amd-systemd-builtin": """
[host]
root = "root"
init = "systemd"
cpu_vendor = "amd"
[kernel]
version = "5.15.160"
vfio = "builtin"
[boot]
root_device = "/dev/nvme0n1p2"
iommu_pt = false
[[devices]]
id = "1002:73bf"
""",
}


def write_case(tmp: Path, name: str) -> Path:
    """Write case ``name`` as ``tmp/<name>.toml`` and return its path."""
    path = tmp / f"{name}.toml"
    path.write_text(CASES[name])
    return path
