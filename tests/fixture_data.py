"""The hosts tests/make_fixtures.py lays out: the seed's HPE DL380 Gen9, a desktop, a big host."""
from __future__ import annotations

import lzma
from pathlib import Path

from make_fixtures import IO, MEM32, MEM64P, G, M, Dev

# Flags of a Xeon E5-2680 v4 (Broadwell-EP, the DL380 Gen9's CPU family) as Linux 6.x prints them.
XEON_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr "
              "sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl "
              "xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 "
              "sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx "
              "f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 cdp_l3 invpcid_single pti intel_ppin "
              "ssbd ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 hle avx2 "
              "smep bmi2 erms invpcid rtm cqm rdt_a rdseed adx smap intel_pt xsaveopt dtherm ida arat pln pts md_clear")


def cpuinfo(model: str, flags: str, cpus: int = 2) -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                   for i in range(cpus))


# The seed's second boot (after intel_iommu=on), `dmesg | grep -e DMAR -e IOMMU`, verbatim;
# the first boot is the same without the "IOMMU enabled" line.
SEED_DMAR = """\
[    0.008932] ACPI: DMAR 0x000000007B7E7000 000294 (v01 HP     ProLiant 00000001 HP   00000001)
[    0.008964] ACPI: Reserving DMAR table memory at [mem 0x7b7e7000-0x7b7e7293]
[    1.370946] DMAR: IOMMU enabled
[    2.564033] DMAR: Host address width 46
[    2.564036] DMAR: DRHD base: 0x000000fbffc000 flags: 0x0
[    2.564046] DMAR: dmar0: reg_base_addr fbffc000 ver 1:0 cap d2078c106f0466 ecap f020df
[    2.564052] DMAR: DRHD base: 0x000000c7ffc000 flags: 0x1
[    2.564058] DMAR: dmar1: reg_base_addr c7ffc000 ver 1:0 cap d2078c106f0466 ecap f020df
[    2.564062] DMAR: RMRR base: 0x00000079174000 end: 0x00000079176fff
[    2.564066] DMAR: RMRR base: 0x000000791f4000 end: 0x000000791f7fff
[    2.564069] DMAR: RMRR base: 0x000000791de000 end: 0x000000791f3fff
[    2.564072] DMAR: RMRR base: 0x000000791cb000 end: 0x000000791dbfff
[    2.564075] DMAR: RMRR base: 0x000000791dc000 end: 0x000000791ddfff
[    2.564079] DMAR-IR: IOAPIC id 10 under DRHD base  0xfbffc000 IOMMU 0
[    2.564083] DMAR-IR: IOAPIC id 8 under DRHD base  0xc7ffc000 IOMMU 1
[    2.564086] DMAR-IR: IOAPIC id 9 under DRHD base  0xc7ffc000 IOMMU 1
[    2.564089] DMAR-IR: HPET id 0 under DRHD base 0xc7ffc000
[    2.564092] DMAR-IR: Queued invalidation will be enabled to support x2apic and Intr-remapping.
[    2.564794] DMAR-IR: Enabled IRQ remapping in x2apic mode
[    2.739214] DMAR: No ATSR found
[    2.739217] DMAR: No SATC found
[    2.739220] DMAR: dmar0: Using Queued invalidation
[    2.739225] DMAR: dmar1: Using Queued invalidation
[    2.755479] DMAR: Intel(R) Virtualization Technology for Directed I/O
"""
SEED_RELEASE = "6.10.5"
SEED_CMDLINE = ("BOOT_IMAGE=/boot/vmlinuz-6.10.5-lfs-12.2 root=PARTUUID=cf8d6f20-92bf-4f81-982e-50bea63e6ca3 ro "
                "iommu=pt intel_iommu=on pcie_acs_override=downstream,multifunction")
SEED_MODULES_DEP = """\
kernel/drivers/vfio/vfio.ko:
kernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko
kernel/drivers/net/tun.ko:
"""
SEED_BUILTIN = "kernel/drivers/pci/pcie/portdrv.ko\nkernel/drivers/iommu/intel/iommu.ko\n"


def seed_config(default_on: bool) -> str:
    """The IOMMU/VFIO part of the seed's menuconfig (kernel 6.10.5, VFIO as modules)."""
    lines = ["CONFIG_IOMMU_SUPPORT=y", "# CONFIG_AMD_IOMMU is not set", "CONFIG_INTEL_IOMMU=y",
             "CONFIG_INTEL_IOMMU_SVM=y",
             "CONFIG_INTEL_IOMMU_DEFAULT_ON=y" if default_on else "# CONFIG_INTEL_IOMMU_DEFAULT_ON is not set",
             "CONFIG_INTEL_IOMMU_SCALABLE_MODE_DEFAULT_ON=y", "CONFIG_INTEL_IOMMU_PERF_EVENTS=y", "CONFIG_IRQ_REMAP=y",
             "CONFIG_VFIO=m", "CONFIG_VFIO_GROUP=y", "CONFIG_VFIO_CONTAINER=y", "CONFIG_VFIO_NOIOMMU=y",
             "CONFIG_VFIO_PCI=m", "CONFIG_VFIO_PCI_VGA=y", "CONFIG_TUN=m"]
    return "\n".join(lines) + "\n"


def dl380_devices(iommu: bool = True, p10_bar1_unassigned: bool = False, t10_on_host: bool = False) -> list[Dev]:
    vfio = "vfio-pci" if iommu else None   # without an IOMMU vfio-pci's probe fails (-22): no driver
    # t10_on_host: the T10 before any binding, on nouveau (the driver its guest `lspci -k` names), with the
    # HDMI audio function the NVIDIA quirk exposes (TU102 audio, 10de:10f7) in its group
    # (docs/explanation/iommu-groups.md#the-cards-audio-function).
    t10 = "nouveau" if t10_on_host else vfio
    audio = [Dev("0000:82:00.1", "10de:10f7", 0x040300, "10de:1370", 0xA1, "snd_hda_intel", 72, 1,
                 [(0, 16 * 1024, MEM32)], "0000:80:02.0")] if t10_on_host else []
    return [
        Dev("0000:00:00.0", "8086:6f00", 0x060000, "103c:8003", 0x01, None, 0, 0),
        Dev("0000:00:01.0", "8086:6f02", 0x060400, "0000:0000", 0x01, "pcieport", 1, 0),
        Dev("0000:00:02.0", "8086:6f04", 0x060400, "0000:0000", 0x01, "pcieport", 2, 0),
        Dev("0000:00:14.0", "8086:8d31", 0x0C0330, "103c:8030", 0x05, "xhci_hcd", 20, 0, [(0, 64 * 1024, MEM64P & ~0x2000)]),
        Dev("0000:00:1c.0", "8086:8d10", 0x060400, "0000:0000", 0xD5, "pcieport", 25, 0),
        Dev("0000:00:1f.0", "8086:8d44", 0x060100, "103c:8030", 0x05, "lpc_ich", 30, 0),
        Dev("0000:02:00.0", "14e4:1657", 0x020000, "103c:22be", 0x01, "tg3", 26, 0, [(0, 64 * 1024, MEM64P), (2, 64 * 1024, MEM64P)], "0000:00:1c.0"),
        Dev("0000:02:00.1", "14e4:1657", 0x020000, "103c:22be", 0x01, "tg3", 26, 0, [(0, 64 * 1024, MEM64P), (2, 64 * 1024, MEM64P)], "0000:00:1c.0"),
        Dev("0000:03:00.0", "103c:3239", 0x010400, "103c:21c1", 0x01, "hpsa", 40, 0, [(0, M, MEM64P & ~0x2000), (2, 1024, MEM64P & ~0x2000), (4, 256, IO)], "0000:00:01.0"),
        # The P10, alone in IOMMU group 59 as the seed lists it.
        Dev("0000:05:00.0", "10de:1b39", 0x030200, "10de:1217", 0xA1, vfio, 59, 0,
            [(0, 16 * M, MEM32), (1, 32 * G, MEM64P, p10_bar1_unassigned), (3, 32 * M, MEM64P)], "0000:00:02.0"),
        Dev("0000:80:02.0", "8086:6f04", 0x060400, "0000:0000", 0x01, "pcieport", 70, 1),
        Dev("0000:82:00.0", "10de:1e37", 0x030200, "10de:1370", 0xA1, t10, 72, 1,
            [(0, 16 * M, MEM32), (1, 16 * G, MEM64P), (3, 32 * M, MEM64P)], "0000:80:02.0"),
        *audio,
    ]


def _dl380_log(iommu: bool, unassigned: bool) -> str:
    head = (f"[    0.000000] Linux version {SEED_RELEASE} (root@lfs) (gcc (GCC) 14.2.0, GNU ld (GNU Binutils) 2.43.1) #1 SMP\n"
            f"[    0.000000] Command line: {SEED_CMDLINE if iommu else SEED_CMDLINE.replace(' intel_iommu=on', '')}\n")
    dmar = SEED_DMAR if iommu else SEED_DMAR.replace("[    1.370946] DMAR: IOMMU enabled\n", "")
    bar = ("[    3.201100] pci 0000:05:00.0: BAR 1: no space for [mem size 0x800000000 64bit pref]\n"
           "[    3.201104] pci 0000:05:00.0: BAR 1: failed to assign [mem size 0x800000000 64bit pref]\n") if unassigned else ""
    # Linux >= 5.14 lists parameters no built-in code claimed (init/main.c); mainline has no ACS override.
    unknown = ('[    3.900001] Unknown kernel command line parameters "BOOT_IMAGE=/boot/vmlinuz-6.10.5-lfs-12.2 '
               'pcie_acs_override=downstream,multifunction", will be passed to user space.\n')
    vfio = ("[  639.398688] VFIO - User Level meta-driver version: 0.3\n"
            "[  639.404672] vfio_pci: add [10de:1b39[ffffffff:ffffffff]] class 0x000000/00000000\n"
            "[ 3521.118431] vfio-pci 0000:05:00.0: Enabling HDA controller\n") if iommu else ""
    rmrr = ("[ 3521.119002] vfio-pci 0000:05:00.0: DMAR: Device is ineligible for IOMMU domain attach due to "
            "platform RMRR requirement.  Contact your platform vendor.\n") if unassigned else ""
    return head + dmar + bar + unknown + vfio + rmrr


def dl380(iommu: bool = True, unassigned: bool = False, t10_on_host: bool = False) -> dict:
    return {"devs": dl380_devices(iommu, unassigned, t10_on_host), "iommu": iommu,
            "cmdline": SEED_CMDLINE if iommu else SEED_CMDLINE.replace(" intel_iommu=on", ""),
            "cpuinfo": cpuinfo("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", XEON_FLAGS),
            "dmesg": _dl380_log(iommu, unassigned), "release": SEED_RELEASE, "config": seed_config(default_on=iommu),
            "modules_dep": SEED_MODULES_DEP, "modules_builtin": SEED_BUILTIN}


def debian_config() -> str:
    """Debian 12's real amd64 kernel config (package linux-config-6.1)."""
    return lzma.decompress(Path("/usr/src/linux-config-6.1/config.amd64_none_amd64.xz").read_bytes()).decode()


def shared_group() -> dict:
    """A Kaby Lake desktop: a GTX 1070 in a chipset slot behind PCH root ports without ACS,
    so its group also holds its HDMI audio (snd_hda_intel) and an ASMedia USB controller (xhci_hcd)."""
    devs = [
        Dev("0000:00:00.0", "8086:591f", 0x060000, "1462:7a68", 0x05, "skl_uncore", 0),
        Dev("0000:00:02.0", "8086:5912", 0x030000, "1462:7a68", 0x04, "i915", 1, -1, [(0, 16 * M, MEM64P & ~0x2000), (2, 256 * M, MEM64P), (4, 64, IO)]),
        Dev("0000:00:14.0", "8086:a2af", 0x0C0330, "1462:7a68", 0x00, "xhci_hcd", 3, -1, [(0, 64 * 1024, MEM64P & ~0x2000)]),
        Dev("0000:00:1c.0", "8086:a290", 0x060400, "0000:0000", 0xF0, "pcieport", 8),
        Dev("0000:00:1c.4", "8086:a294", 0x060400, "0000:0000", 0xF0, "pcieport", 8),
        Dev("0000:02:00.0", "10de:1b81", 0x030000, "1462:3301", 0xA1, "vfio-pci", 8, -1,
            [(0, 16 * M, MEM32), (1, 256 * M, MEM64P), (3, 32 * M, MEM64P), (5, 128, IO)], "0000:00:1c.0"),
        Dev("0000:02:00.1", "10de:10f0", 0x040300, "1462:3301", 0xA1, "snd_hda_intel", 8, -1, [(0, 16 * 1024, MEM32)], "0000:00:1c.0"),
        Dev("0000:03:00.0", "1b21:1242", 0x0C0330, "1462:7a68", 0x00, "xhci_hcd", 8, -1, [(0, 32 * 1024, MEM64P & ~0x2000)], "0000:00:1c.4"),
    ]
    release = "6.1.0-18-amd64"
    cmd = f"BOOT_IMAGE=/boot/vmlinuz-{release} root=UUID=0c6e4d1a-5b1e-4f7c-9a43-5d2d2b1f3e11 ro quiet intel_iommu=on iommu=pt vfio-pci.ids=10de:1b81"
    log = (f"[    0.000000] Command line: {cmd}\n[    0.061234] DMAR: IOMMU enabled\n"
           "[    0.170421] DMAR-IR: Enabled IRQ remapping in x2apic mode\n")
    return {"devs": devs, "cmdline": cmd, "cpuinfo": cpuinfo("Intel(R) Core(TM) i7-7700K CPU @ 4.20GHz", XEON_FLAGS, 8),
            "dmesg": log, "release": release, "config": debian_config(), "modules_dep": SEED_MODULES_DEP, "modules_builtin": ""}


# The DL380 Gen9's two sockets as Linux numbers two 14-core E5-2680 v4 with Hyper-Threading: node 0
# the first socket's cores and their siblings, node 1 the second's (the T10 behind root port 80:02.0
# hangs off socket 1: numa_node 1).  The CPU numbering is the kernel's usual one for this board;
# memory per node and the huge page pools are illustrative: 16 free 1G pages spread 8 + 8, as a
# plain hugepages=16 reserves them.
DL380_NODES = {0: "0-13,28-41", 1: "14-27,42-55"}


def dl380_two_node(pages_1g: tuple[int, int] = (8, 8)) -> dict:
    host = dl380()
    host["cpuinfo"] = cpuinfo("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", XEON_FLAGS, 56)
    return {**host, "numa": DL380_NODES, "node_kib": 128 << 20,
            "hugepages": {n: {1048576: (free, free)} for n, free in enumerate(pages_1g)}}


FIXTURES = {
    "dl380-two-node": dl380_two_node,
    "dl380": dl380,
    "dl380-p10-unassigned": lambda: dl380(unassigned=True),
    "dl380-iommu-off": lambda: dl380(iommu=False),
    "dl380-t10-on-host": lambda: dl380(t10_on_host=True),
    "shared-group": shared_group,
}


def bench_host(sockets: int = 4, slots: int = 30) -> dict:
    """A big generated host: per socket a host bridge and ``slots`` root ports, each with a
    two-function card (a T10 + HDA-like audio pair or a dual-port NIC); >= 200 devices."""
    devs, group = [], 0
    for s in range(sockets):
        bus = s * 0x40
        devs.append(Dev(f"0000:{bus:02x}:00.0", "8086:6f00", 0x060000, "103c:8003", 1, None, group, s))
        group += 1
        for p in range(slots):
            port = f"0000:{bus:02x}:{1 + p // 4:02x}.{p % 4}"
            child = bus + 1 + p
            devs.append(Dev(port, "8086:6f04", 0x060400, "0000:0000", 1, "pcieport", group, s))
            group += 1
            if p % 2 == 0:
                devs.append(Dev(f"0000:{child:02x}:00.0", "10de:1e37", 0x030200, "10de:1370", 0xA1, "vfio-pci", group, s,
                                [(0, 16 * M, MEM32), (1, 16 * G, MEM64P), (3, 32 * M, MEM64P)], port))
                devs.append(Dev(f"0000:{child:02x}:00.1", "10de:10f8", 0x040300, "10de:1370", 0xA1, "snd_hda_intel", group, s,
                                [(0, 16 * 1024, MEM32)], port))
            else:
                devs.extend(Dev(f"0000:{child:02x}:00.{fn}", "14e4:1657", 0x020000, "103c:22be", 1, "tg3", group, s,
                                [(0, 64 * 1024, MEM64P)], port) for fn in (0, 1))
            group += 1
    return {"devs": devs, "cmdline": SEED_CMDLINE, "cpuinfo": cpuinfo("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", XEON_FLAGS),
            "dmesg": SEED_DMAR, "release": SEED_RELEASE, "config": seed_config(True), "modules_dep": SEED_MODULES_DEP,
            "modules_builtin": SEED_BUILTIN}
