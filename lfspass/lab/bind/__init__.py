"""The runtime-bind lab: the lab guest gets QEMU's e1000e (a device with a real host driver),
Debian's python3 and the part of lfspass that `lfspass bind` / `release` import, and runs them.
`image` packs that initramfs, `verdict` boots it and judges each step, `tasks` makes the
``labbind:*`` doit tasks.
"""
