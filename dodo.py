"""lfspass build graph: `doit` runs the whole job on the recipe (default recipes/lab.toml).

    doit recipe=recipes/hpe-dl380-t10.toml kernel grub vfio vm

All logic lives in the lfspass package (lfspass.graph ties the stages together);
this file only names the tasks.
"""
from doit import create_after, get_var

from lfspass import graph
from lfspass.graph import Reporter

CTX = graph.load_context(get_var("recipe", None))

DOIT_CONFIG = {
    # A lab recipe proves itself in QEMU; a real host's recipe ends with its VMs.
    # The runtime-bind lab (recipes/lab-bind.toml) boots its own guest only.
    "default_tasks": ["kernel", "grub", "vfio", *(["lab", "vm", "nested"] if CTX.recipe.lab.nested else
                                                  ["labbind"] if CTX.recipe.lab.bind else
                                                  ["lab"] if CTX.recipe.lab.enabled else ["vm"])],
    "reporter": Reporter,
    "verbosity": 2,
}


def task_kernel():
    """Configure, build and install the recipe's kernel (LFS names, under the install root)."""
    if CTX.builds_kernel:
        yield from graph.kernel_tasks(CTX)


def task_kernel_repro():
    """kernel:repro: build the configured kernel twice (other -j, no ccache), compare bzImage, vmlinux, modules."""
    if CTX.builds_kernel:
        yield graph.kernel_repro_task(CTX)


def task_grub():
    """Write the GRUB menuentry (IOMMU and vfio parameters) into the root's grub.cfg."""
    return graph.grub_task(CTX)


def task_vfio():
    """Bind the recipe's devices to vfio-pci at boot (modprobe.d + LFS autoload)."""
    return graph.vfio_task(CTX)


def task_lab():
    """Boot the installed kernel in QEMU with an emulated IOMMU and check the device lands on vfio-pci."""
    yield from graph.lab_tasks(CTX)


def task_bootonce():
    """Lab scenario: the boot script confirms a good kernel; a failing one uses its 2 tries and is marked bad; rollback."""
    return graph.bootonce_task(CTX)


def task_labbind():
    """Runtime-bind lab: the lab guest runs `lfspass bind` / `release` on QEMU's e1000e and a shared group."""
    yield from graph.labbind_tasks(CTX)


def task_vm():
    """Fetch firmware and media, make disks, install guests and write their launchers."""
    yield from graph.vm_tasks(CTX)


def task_nested():
    """Nested lab: the lab guest runs the VM launcher; its own guest must see the stand-in device."""
    yield from graph.nested_tasks(CTX)


if CTX.recipe.lab.nested:
    # The VM plan reads the host the lab guest saved, so vm (then nested) is planned only
    # after the lab boot has run: doit creates those tasks once their predecessor executed.
    task_vm = create_after(executed="lab")(task_vm)
    task_nested = create_after(executed="vm")(task_nested)
