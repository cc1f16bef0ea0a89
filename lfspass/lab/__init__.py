"""The virtual lab: boots the installed kernel in QEMU under an emulated IOMMU and judges the
result with doctor.

Imports the spine, `host/`, `doctor/` and `boot/` (the files it boots with); it reads the
kernel stage's output from disk through the plan.  The nested lab (nested.py, l1image.py)
also imports `vm/`: it runs the launcher the vm stage wrote inside the lab guest.
"""
