"""The image guest (``installer.source = "image"``): a disk built from Debian packages instead of
an installer run. `packages` runs mmdebstrap, `root` makes its tree a bootable guest, `disk` puts
it on a GPT disk (ESP + ext4) and converts it to qcow2, `first_boot` boots it once under OVMF,
`build` runs those steps and moves the disk into place.
"""
