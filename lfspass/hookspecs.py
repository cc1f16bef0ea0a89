"""Hook specifications: the contract between lfspass and GPU plugins.

Two kinds of hooks:

* host-wide hooks take ``device=None`` and run on every plugin;
* device hooks run once per device, on the plugin that claims the device's PCI id
  (see :func:`lfspass_pci_ids`; the ``generic`` plugin gets ids nobody claims) and on
  plugins that claim no ids at all (cross-cutting plugins such as an ACS helper).

The same hook serves both: lfspass calls it once with ``device=None`` and once per
device.  Return ``None`` (or an empty value) when a call is not yours.  Values are
merged in plugin order; later plugins see nothing of earlier results.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lfspass")


@hookspec
def lfspass_pci_ids() -> list[str] | None:
    """PCI ids this plugin claims.

    :return: ``vendor:device`` strings in lower-case hex (``"10de:1e37"``), or
        ``["*"]`` for the fallback plugin that takes ids nobody else claims.
        A plugin that claims nothing returns ``[]`` (``None`` counts as ``[]``) and then
        sees every device.
    """


@hookspec
def lfspass_kconfig_requests(recipe, device) -> list | None:
    """Kconfig symbols this plugin needs.

    :param recipe: the loaded :class:`lfspass.recipe.Recipe`.
    :param device: a :class:`lfspass.plan.Device`, or ``None`` for the host-wide call.
    :return: a list of :class:`lfspass.api.Request` (``symbol``, ``value``,
        ``source``, ``optional``).  A request the kernel refuses stops the build
        with an explanation, so ask only for what the device really needs.
    """


@hookspec
def lfspass_cmdline(recipe, device) -> list[str] | None:
    """Kernel command-line parameters (``key=value`` or bare words).

    :param recipe: the loaded recipe.
    :param device: the device, or ``None`` for the host-wide call.
    :return: parameters in order; duplicates across plugins are dropped.
    """


@hookspec
def lfspass_modprobe(recipe, device) -> list[str] | None:
    """Lines for ``etc/modprobe.d/vfio.conf`` (``softdep``/``options`` lines).

    :param recipe: the loaded recipe.
    :param device: the device, or ``None`` for the host-wide call.
    :return: full lines without a newline.  ``options vfio-pci ids=`` is written by
        lfspass itself; plugins add ``softdep <driver> pre: vfio-pci`` for the host
        drivers that would otherwise take their card.
    """


@hookspec
def lfspass_autoload(recipe, device) -> list[str] | None:
    """Modules to load at boot besides ``vfio-pci`` (e.g. ``tun`` for tap networking).

    :param recipe: the loaded recipe.
    :param device: the device, or ``None`` for the host-wide call.
    :return: module names; names the installed kernel builds in are dropped.
    """


@hookspec
def lfspass_qemu_device_args(vm, device) -> list[str] | None:
    """Extra QEMU argv for one passed-through device (quirks), besides its ``-device vfio-pci``.

    :param vm: the :class:`lfspass.recipe.VmSpec` the device goes to.
    :param device: the device (never ``None`` here).
    :return: argv items, e.g. ``["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=65536"]``.
    """


@hookspec
def lfspass_qemu_vm_args(vm) -> list[str] | None:
    """Extra QEMU argv for a whole VM (host-wide call of the VM launcher).

    :param vm: the VM.
    :return: argv items appended before the passthrough devices.
    """


@hookspec
def lfspass_cpu_flags(vm, device) -> list[str] | None:
    """Properties to add to ``-cpu host`` (e.g. ``host-phys-bits=on`` for large BARs).

    :param vm: the VM.
    :param device: the device, or ``None`` for the host-wide call.
    :return: ``key=value`` strings, merged without duplicates.
    """


@hookspec
def lfspass_device_kind(vm, device) -> list[str] | None:
    """What a passed-through card is to the VM's screen.

    :param vm: the :class:`lfspass.recipe.VmSpec` the device goes to.
    :param device: the device (never ``None`` here).
    :return: ``["compute"]`` for a card without display outputs (its VMs get no emulated VGA and
        no VNC unless the recipe sets ``vnc.enabled = true``), ``["display"]`` for one with
        outputs whatever its class says (one ``"display"`` answer wins), ``None`` to let the PCI class
        decide (0302 = compute).
    """


@hookspec
def lfspass_doctor_checks(host, recipe, device) -> list | None:
    """Extra diagnosis for ``lfspass doctor``.

    :param host: the :class:`lfspass.host.read.Host` being read (live or saved root).
    :param recipe: the loaded recipe, or ``None`` when doctor runs without one.
    :param device: the device, or ``None`` for the host-wide call.
    :return: a list of :class:`lfspass.api.Check` (id, status, title, detail, fix).
    """
