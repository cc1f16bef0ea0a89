"""lfspass build graph: `doit` runs the whole job on the recipe (default recipes/lab.toml).

    doit recipe=recipes/hpe-dl380-t10.toml kernel grub vfio vm

All logic lives in the lfspass package; this file only names the tasks.
"""
from doit import get_var

from lfspass.tasks import Reporter, host_task, load_context

CTX = load_context(get_var("recipe", None))
ROOT = CTX.recipe.root

DOIT_CONFIG = {
    # A lab recipe proves itself in QEMU; a real host's recipe ends with its VMs.
    "default_tasks": ["kernel", "grub", "vfio", "lab" if CTX.recipe.lab.enabled else "vm"],
    "reporter": Reporter,
    "verbosity": 2,
}


def task_kernel():
    """Configure, build and install the recipe's kernel (LFS names, under the install root)."""
    from lfspass.kernel_tasks import kernel_tasks

    if CTX.builds_kernel:
        yield from kernel_tasks(CTX)


def task_grub():
    """Write the GRUB menuentry (IOMMU and vfio parameters) into the root's grub.cfg."""
    return host_task(CTX, "grub", [ROOT / CTX.recipe.boot.grub_cfg], ["grub-entry.j2"])


def task_vfio():
    """Bind the recipe's devices to vfio-pci at boot (modprobe.d + LFS autoload)."""
    from lfspass.vfio import AUTOLOAD_FILES, MODPROBE_CONF

    targets = [ROOT / MODPROBE_CONF, ROOT / AUTOLOAD_FILES[CTX.recipe.host.init]]
    return host_task(CTX, "vfio", targets, ["vfio.conf.j2", "autoload.j2"])


def task_lab():
    """Boot the installed kernel in QEMU with an emulated IOMMU and check the device lands on vfio-pci."""
    from lfspass.lab import lab_tasks

    yield from lab_tasks(CTX)


def task_vm():
    """Fetch firmware and media, make disks, install guests and write their launchers."""
    from lfspass.vm_tasks import vm_tasks

    yield from vm_tasks(CTX)
