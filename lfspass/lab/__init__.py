"""The virtual lab: boots the installed kernel in QEMU under an emulated IOMMU and judges the
result with doctor.

Imports the spine, `host/`, `doctor/` and `boot/` (the files it boots with); it reads the
kernel stage's output from disk through the plan.
"""
