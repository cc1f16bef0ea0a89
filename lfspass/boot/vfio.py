"""vfio-pci binding files: modprobe.d options/softdeps and the LFS module autoload list."""
from __future__ import annotations

from pathlib import Path

from lfspass.boot.blockfile import write_block
from lfspass.plan import HostPlan
from lfspass.render import render

MODPROBE_CONF = "etc/modprobe.d/vfio.conf"
# Which file the host's init reads (docs/explanation/module-loading.md): nothing in LFS reads /etc/modules.
AUTOLOAD_FILES = {
    "sysvinit": "etc/sysconfig/modules",           # /etc/rc.d/init.d/modules: `modprobe <line>`
    "systemd": "etc/modules-load.d/lfspass.conf",  # systemd-modules-load: one name per line
}


def modprobe_path(plan: HostPlan) -> Path:
    return plan.recipe.root / MODPROBE_CONF


def autoload_path(plan: HostPlan) -> Path:
    return plan.recipe.root / AUTOLOAD_FILES[plan.recipe.host.init]


def render_modprobe(plan: HostPlan) -> str:
    return render("vfio.conf.j2", builtin=plan.kernel.vfio_builtin, release=plan.kernel.release,
                  ids=plan.vfio_ids, modprobe=plan.modprobe,
                  runtime=[f"{d.address or d.id} ({d.id})" for d in plan.runtime])


def render_autoload(plan: HostPlan) -> str:
    return render("autoload.j2", init=plan.recipe.host.init, modules=plan.autoload)


def write_vfio(plan: HostPlan) -> list[Path]:
    """Write both files' lfspass blocks; return the files that changed."""
    note = f"generated from {plan.recipe.path.name}; edit the recipe, not this block"
    changed = []
    for path, body in ((modprobe_path(plan), render_modprobe(plan)), (autoload_path(plan), render_autoload(plan))):
        if write_block(path, body, note, root=plan.recipe.root):
            changed.append(path)
    return changed
