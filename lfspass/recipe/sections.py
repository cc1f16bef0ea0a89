"""The recipe's sections: one dataclass per TOML table, each key with its default and its doc line."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from lfspass.schema import Rule, choice, path_field


@dataclass
class HostSection:
    name: str = field(default="host", metadata={"doc": "a label for messages and the GRUB title"})
    root: str = path_field("/", "install root: everything lfspass writes goes below it")
    sysfs_root: str = path_field("/", "host root to read PCI devices from (a saved `doctor --save` folder works)")
    init: str = choice("sysvinit", "systemd", default="sysvinit", doc="which LFS book the host follows")
    cpu_vendor: str = choice("intel", "amd", default="intel", doc="picks IOMMU Kconfig symbols and kernel parameters")


@dataclass
class ExternalModuleSpec:
    name: str = field(metadata={"doc": "the module's name: its folder under lib/modules/<rel>/updates/, its build copy and its log in the build folder, its entry in the manifest"})
    source: str = field(metadata={"path": True, "doc": "the module's source: a folder (copied into the build folder; it is never built in place) or a tarball (unpacked there: absolute names, '..' and links leaving it are refused), with its Kbuild or Makefile at the top or in the one folder the tarball holds"})
    make_args: list[str] = field(default_factory=list, metadata={"doc": "make variables for its kbuild, each VAR=value, e.g. [\"CONFIG_HELLO_DEBUG=y\"] (no shell: no spaces, quotes or '$'); lfspass sets M, O and the INSTALL_MOD_* ones itself"})


@dataclass
class KernelSection:
    source: str = path_field("", "kernel tree folder or release tarball; empty = lfspass does not build the kernel and reads the one installed under the root (set version)")
    version: str = field(default="", metadata={"doc": "kernel release; empty = read from the tree's Makefile"})
    lfs_version: str = field(default="12.2", metadata={"doc": "the -lfs-<ver> suffix of the installed vmlinuz"})
    base: str = field(default="tinyconfig", metadata={"doc": "tinyconfig | defconfig | current | path to a .config (.xz ok)"})
    vfio: str = choice("module", "builtin", default="module", doc="VFIO and VFIO_PCI as =m or =y")
    vfio_backend: str = choice("group", "iommufd", default="group", doc="group = VFIO's /dev/vfio/N; iommufd = also IOMMUFD + VFIO_DEVICE_CDEV (/dev/iommu, /dev/vfio/devices/vfioN; kernel 6.2 / 6.6 and later, skipped with a note on older trees), and launchers use QEMU's iommufd backend where that QEMU has it")
    config: dict[str, str] = field(default_factory=dict, metadata={"doc": "extra Kconfig requests, SYMBOL = \"y\""})
    resolve: bool = field(default=False, metadata={"doc": "enable visible symbols a refused request depends on"})
    build_dir: str = path_field("build/kernel", "out-of-tree build folder (O=)")
    jobs: int = field(default=0, metadata={"doc": "make -j; 0 = number of CPUs"})
    timestamp: str = field(default="", metadata={"doc": "KBUILD_BUILD_TIMESTAMP; empty = SOURCE_DATE_EPOCH or the tree's date"})
    ccache: bool = field(default=False, metadata={"doc": "compile through ccache when it is installed"})
    signing_key: str = path_field("", "PEM (private key + certificate) that signs modules when the config has MODULE_SIG; empty = one lfspass makes once in .lfspass/ beside the recipe")
    docs: bool = field(default=False, metadata={"doc": "also install Documentation to usr/share/doc/linux-<ver>"})
    accept_upgrade: bool = field(default=False, metadata={"doc": "build even when the upgrade report lists changes likely to break the host (every report, unread)"})
    accept_report: str = field(default="", metadata={"doc": "the digest of the one upgrade report you read and accept (<build_dir>/upgrade-report.txt); another report stops again"})
    external_modules: list[ExternalModuleSpec] = field(default_factory=list)


@dataclass
class BootSection:
    fs_uuid: str = field(default="", metadata={"doc": "filesystem UUID GRUB searches for (blkid)"})
    root_partuuid: str = field(default="", metadata={"doc": "root= PARTUUID of the LFS root partition"})
    root_device: str = field(default="", metadata={"doc": "root= device when no PARTUUID is given, e.g. /dev/vda1"})
    iommu_pt: bool = field(default=True, metadata={"doc": "add iommu=pt (identity-map host devices; weaker DMA hardening)"})
    acs_override: str = field(default="", metadata={"doc": "pcie_acs_override= value; needs the out-of-tree ACS patch"})
    microcode: str = field(default="", metadata={"doc": "initrd line for early microcode, e.g. /boot/microcode.img"})
    initrd: str = field(default="", metadata={"doc": "initramfs GRUB loads after microcode, as GRUB sees it, e.g. /boot/initrd.img (the lab installs its busybox initramfs there)"})
    cmdline: list[str] = field(default_factory=list, metadata={"doc": "extra kernel parameters"})
    grub_cfg: str = field(default="boot/grub/grub.cfg", metadata={"doc": "grub.cfg path below the install root"})
    title: str = field(default="", metadata={"doc": "menuentry title; empty = 'GNU/Linux, Linux <rel>-lfs-<lfsver>'"})
    entry_template: str = path_field("", "your own Jinja2 template for the menuentry (see lfspass/templates/grub-entry.j2)")
    tries: int = field(default=1, metadata={"doc": "boots `lfspass boot try` gives the new kernel before GRUB falls back to the default for good (GRUB counts them, so a kernel that never reaches userspace is counted too); one that used them unconfirmed is marked bad"})


@dataclass
class DeviceSpec:
    address: str = field(default="", metadata={"doc": "PCI address, e.g. 82:00.0 (id read from sysfs)"})
    id: str = field(default="", metadata={"doc": "vendor:device, e.g. 10de:1e37"})
    name: str = field(default="", metadata={"doc": "a label"})


def _doc(default, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass
class FirmwareSpec:
    type: str = choice("ovmf", "bios", default="ovmf",
                       doc="ovmf (UEFI on two pflash drives) or bios (QEMU's own SeaBIOS, no UEFI variables: "
                           "the nested lab's inner guest, where OVMF under TCG inside TCG is too slow)")
    code: str = path_field("", "OVMF CODE image (read-only pflash); empty = found through QEMU's firmware descriptors (Debian's ovmf) or downloaded from code_url")
    vars: str = path_field("", "OVMF VARS template, copied once to VMDIR/OVMF_VARS.fd (never overwritten); empty = the descriptor's nvram-template or vars_url")
    code_url: str = _doc("", "download CODE from here (needs code_sha256)")
    code_sha256: str = _doc("", "sha256 of code_url")
    code_max_size: str = _doc("64M", "the most bytes code_url may have: a larger announced size is refused, "
                                     "a longer body cut")
    vars_url: str = _doc("", "download the VARS template from here (needs vars_sha256)")
    vars_sha256: str = _doc("", "sha256 of vars_url")
    vars_max_size: str = _doc("64M", "the most bytes vars_url may have")
    secure_boot: bool = _doc(False, "pick a Secure Boot build from the descriptors (turns SMM on)")
    descriptors: str = path_field("/usr/share/qemu/firmware", "folder of QEMU firmware descriptors (*.json)")


@dataclass
class DiskSpec:
    path: str = path_field("", "qcow2 image; empty = VMDIR/NAME.qcow2; an existing image is never overwritten")
    size: str = _doc("64G", "virtual size (qemu-img units: 512M, 64G, 1T); grow later with `qemu-img resize`")
    preallocation: str = choice("off", "metadata", "falloc", "full", default="off",
                                doc="qemu-img preallocation: off = sparse, the file grows as the guest writes (a "
                                    "warning when the filesystem could not hold it all); falloc or full = the whole "
                                    "size taken now (refused when that crosses the free-space reserve)")


@dataclass
class VncSpec:
    enabled: bool | None = field(default=None, metadata={
        "shown": "unset", "doc": "a VNC display with an emulated VGA (the seed's way to watch the guest); unset = "
                                 "on, except for a VM with a compute card (PCI class 0302, the T10 and P10): no "
                                 "VGA and no VNC there, only the serial console"})
    listen: str = _doc("127.0.0.1", "address VNC listens on; anything but loopback needs password_file")
    display: int = _doc(0, "VNC display number N (TCP port 5900 + N)")
    password: bool = _doc(False, "require a VNC password (set it in the QEMU monitor: change vnc password)")
    password_file: str = path_field("", "file holding the VNC password (1-8 characters, no newline; mode 0600 "
                                        "or 0400): the launcher and the libvirt XML both require it; needed "
                                        "for a listen address other than loopback")


@dataclass
class TuningSpec:
    numa: str = choice("auto", "device", "off", default="auto",
                       doc="device = vCPUs on the CPUs of the passthrough device's NUMA node (its local_cpulist) and "
                           "guest memory bound to that node; auto = device when the host has more than one node; "
                           "off = wherever the host scheduler puts them")
    cpus: list[int] = field(default_factory=list, metadata={
        "doc": "host CPUs the vCPUs run on (QEMU started under taskset -c; the XML's cputune); empty = the "
               "node's CPUs when placed, else any"})
    hugepages: str = choice("off", "2M", "1G", default="off",
                            doc="2M or 1G: back guest memory with huge pages of this size (memfd hugetlb; memory must be a "
                                "multiple); the GRUB entry reserves them at boot (hugepagesz=, hugepages=)")


@dataclass
class InstallerSpec:
    source: str = choice("none", "netboot", "iso", "image", default="none",
                         doc="Debian installer: none, netboot (debian-installer-12-netboot-amd64), iso, or image "
                             "(the disk built from packages with mmdebstrap, no installer)")
    iso: str = path_field("", "local installer ISO (offline hosts); or set iso_url")
    iso_url: str = _doc("", "installer ISO to download into VMDIR/install/")
    iso_sha256: str = _doc("", "sha256 of iso_url (or give sums_url)")
    iso_max_size: str = _doc("16G", "the most bytes iso_url may have (SHA256SUMS lists no sizes: this and the "
                                    "server's Content-Length bound the download)")
    sums_url: str = _doc("", "SHA256SUMS listing the ISO (verified with signature_url; at most 8 MiB is read)")
    signature_url: str = _doc("", "SHA256SUMS.sign; checked with gpgv against the Debian CD signing key (at most "
                                  "8 MiB)")
    keyring: str = path_field("", "keyring for signature_url; empty = Debian CD signing key (debian-keyring)")
    netboot: str = path_field("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64",
                              "folder holding the netboot installer's linux and initrd.gz")
    unattended: bool = _doc(True, "preseeded install over the serial console (doit vm:install:NAME); "
                                  "false = only the interactive VNC launcher NAME-install.sh")
    preseed: str = path_field("", "preseed file or jinja2 template; empty = lfspass's templates/preseed.cfg.j2")
    append: list[str] = field(default_factory=list, metadata={"doc": "extra installer kernel parameters"})
    mirror: str = _doc("", "Debian mirror host for the install; empty = none (install from the ISO alone); "
                           "for source = \"image\" an archive URI, empty = the host's own apt sources")
    suite: str = _doc("", "source = \"image\": Debian release to build, e.g. bookworm; empty = the host's own")
    packages: list[str] = field(default_factory=list, metadata={"doc": "source = \"image\": packages added to "
                                                                       "minbase, a kernel, systemd and openssh-server"})
    user: str = _doc("debian", "the first user's login")
    password_hash: str = _doc("", "crypt(3) hash for that user (mkpasswd -m sha-512); empty = locked, use ssh_key")
    ssh_key: str = _doc("", "public key put in the user's ~/.ssh/authorized_keys")
    timeout: int = _doc(180, "minutes before an unfinished unattended install is stopped")
    silence: int = _doc(900, "seconds without new serial output before an unattended install is "
                             "called stuck and stopped; 0 = wait for timeout")
    overwrite: bool = _doc(False, "with LFSPASS_REINSTALL=1: install over a disk that holds data "
                                  "(an internal qcow2 snapshot is taken first)")


@dataclass
class VmSpec:
    name: str = field(default="vm", metadata={"doc": "VM name: letters, digits, '-', '_', '.'"})
    memory: str = field(default="4G", metadata={"doc": "guest memory (QEMU -m)"})
    cpus: int = field(default=2, metadata={"doc": "guest vCPUs"})
    devices: list[str] = field(default_factory=list, metadata={"doc": "passthrough devices: addresses or ids from [[devices]]"})
    network: str = choice("user", "bridge", "none", default="user", doc="user (slirp), bridge (tap on a bridge) or none")
    bridge: str = field(default="br0", metadata={"doc": "bridge for network = bridge"})
    restrict: bool = _doc(True, "network = user: the guest reaches only this host (restrict=on)")
    mac: str = _doc("", "guest MAC; empty = 52:54:00 + three bytes derived from the name")
    dir: str = path_field("", "VMDIR: folder for NAME.sh, NAME.xml, OVMF_VARS.fd, the disk and install files; "
                              "empty = [host] root + /var/lib/lfspass/vms/NAME")
    libvirt: bool = _doc(False, "libvirt's QEMU user (Debian: libvirt-qemu) may enter VMDIR: a folder lfspass made 0700 becomes 0710 with that user's group, so `virsh start` opens the disk and VARS (docs/reference/safety.md)")
    accel: str = choice("auto", "kvm", "tcg", default="auto",
                        doc="auto = kvm when /dev/kvm is usable when the launcher is written, else tcg")
    bind: str = choice("boot", "runtime", default="boot", doc="boot = the host binds the VM's devices to vfio-pci at boot (vfio-pci ids=); runtime = the launcher runs `lfspass bind` before QEMU starts and `lfspass release` after it exits, and no boot-time ids are written for them")
    missing_devices: str = choice("error", "skip", default="error", doc="a passthrough id absent from the host: error, or skip it with a note in the launcher")
    extra_args: list[str] = field(default_factory=list, metadata={"doc": "QEMU arguments appended as they are"})
    firmware: FirmwareSpec = field(default_factory=FirmwareSpec)
    disk: DiskSpec = field(default_factory=DiskSpec)
    vnc: VncSpec = field(default_factory=VncSpec)
    tuning: TuningSpec = field(default_factory=TuningSpec)
    installer: InstallerSpec = field(default_factory=InstallerSpec)


@dataclass
class LabSection:
    enabled: bool = field(default=False, metadata={"doc": "this recipe is a virtual lab: `doit` boots its kernel in QEMU (task lab) instead of preparing VMs"})
    iommu: bool = field(default=True, metadata={"doc": "give the lab guest an emulated VT-d (false = the negative lab)"})
    nested: bool = field(default=False, metadata={"doc": "the nested lab: after the lab boot, `doit vm` plans from the "
                                                         "host the guest saved, then the guest runs the first VM's "
                                                         "launcher (task nested; recipes/lab-nested.toml)"})
    bind: bool = field(default=False, metadata={"doc": "the runtime-bind lab: the lab guest runs `lfspass bind` / `release` on QEMU's e1000e (task labbind; recipes/lab-bind.toml)"})
    dir: str = path_field("", "where the lab keeps initramfs, guest log and verdict.json; empty = the folder above [host] root")
    timeout: int = field(default=120, metadata={"doc": "seconds the guest may run before the lab gives up"})
    memory: str = field(default="256M", metadata={"doc": "lab guest memory (QEMU -m)"})
    accel: str = choice("tcg", "kvm", default="tcg", doc="QEMU accelerator for the lab guest (tcg works everywhere)")


@dataclass
class Recipe:
    host: HostSection = field(default_factory=HostSection)
    kernel: KernelSection = field(default_factory=KernelSection)
    boot: BootSection = field(default_factory=BootSection)
    devices: list[DeviceSpec] = field(default_factory=list)
    vms: list[VmSpec] = field(default_factory=list)
    lab: LabSection = field(default_factory=LabSection)
    path: Path = field(default=Path("recipe.toml"), metadata={"doc": "the recipe file (set by the loader)"}, init=False)
    rules: ClassVar[dict[str, Rule]]  # the valid form of keys (RULES below), read by schema.load_table

    @property
    def root(self) -> Path:
        return Path(self.host.root)
