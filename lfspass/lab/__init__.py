"""The virtual lab: boots the installed kernel in QEMU under an emulated IOMMU and judges the
result with doctor; `nested/` runs the vm stage's launcher inside the lab guest.

Imports the spine, `host/`, `doctor/`, `boot/` (the files it boots with) and `vm/` (the nested
lab's launcher, the ESP builder); it reads the kernel stage's output from disk through the plan.
"""
