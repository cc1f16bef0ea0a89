"""The nested lab: the lab guest (L1) gets Debian's QEMU and the VM folder `doit vm` wrote, runs
that VM's launcher, and its own guest (L2) must see the stand-in device passed through to it.
`image` packs L1's initramfs, `vm_check` checks the VM against L1's saved host, `verdict` boots
L1 and judges what L2 saw, `tasks` makes the ``nested:*`` doit tasks.
"""
