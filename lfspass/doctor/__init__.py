"""Doctor's checks and their fixes: IOMMU, groups, binding, BARs, NUMA, run over a host
from `host/` and the recipe's plan; also the BAR and softdep helpers plugins use (via lfspass.api).

Imports the spine and `host/`.
"""
