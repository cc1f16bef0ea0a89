"""Guests: the VM plan, QEMU argv, launcher scripts and libvirt XML, OVMF firmware, qcow2
disks, installs (Debian's installer, or `image/`: a disk built from packages), and the `vm:*` doit tasks.

Imports the spine, `host/` (devices the VM gets) and `fetch/` (media and firmware).
"""
