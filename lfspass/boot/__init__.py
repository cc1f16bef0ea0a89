"""Boot-time host files: the GRUB menuentry block, the vfio-pci binding (modprobe.d and LFS
autoload), the marked-block writer, and the `grub`/`vfio` doit tasks.

Imports the spine only.
"""
