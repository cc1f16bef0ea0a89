"""Reading a host, live or saved: sysfs PCI devices and their BARs, IOMMU groups, pci.ids names,
`lfspass doctor --save` copies; NUMA nodes and huge page pools, and where a VM's vCPUs and memory
go by them (`placement.py`, which the launchers, the GRUB entry and doctor all read); and moving a device's group to vfio-pci and back at run time
(`lfspass bind` / `release`, every write through the journal's sysfs writer).

Imports the spine only (errors, fsutil, pci, journal).
"""
