"""Many hosts: a kernel built once, packed into one content-addressed bundle, installed on each
host with the kernel stage's own safety, then its GRUB block and vfio files written there.

Imports the spine, `kernel/` (the install and its manifest) and `boot/` (the grub and vfio
writers); the Ansible role under `ansible/` drives `lfspass install --bundle` and `boot try`.
"""
