"""Reading a host, live or saved: sysfs PCI devices and their BARs, IOMMU groups, pci.ids names,
and `lfspass doctor --save` copies.

Imports the spine only (errors, fsutil, pci).
"""
