#!/bin/sh
# /init of the lfspass lab initramfs (busybox).  It does what an LFS sysvinit boot does
# before udev (mountvirtfs, then S05 /etc/rc.d/init.d/modules), then saves the host
# state in the `lfspass doctor --save` layout, runs the rc3.d start scripts the image
# carries, sends the saved state to the host on the second serial port (ttyS1) as
# base64 between marker lines, and powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "lfspass-lab: init running on $(uname -r): $(cat /proc/cmdline)"

# --- /etc/rc.d/init.d/modules (LFS bootscripts): `modprobe <module> <args>` per line.
# busybox modprobe reads modules.dep and the `options` lines of /etc/modprobe.d/*.conf
# as kmod's does (softdep lines it ignores: nothing here needs them, no GPU driver).
if [ -r /etc/sysconfig/modules ]; then
    loaded=; failed=
    while read -r module args; do
        case "$module" in ""|"#"*) continue ;; esac
        if modprobe "$module" $args; then loaded="$loaded $module"; else failed="$failed $module"; fi
    done < /etc/sysconfig/modules
    echo "lfspass-lab: /etc/sysconfig/modules loaded:${loaded:- none}${failed:+, FAILED:$failed}"
fi
# The systemd book's equivalent, for recipes with init = "systemd".
for conf in /etc/modules-load.d/*.conf; do
    [ -r "$conf" ] || continue
    while read -r module rest; do
        case "$module" in ""|"#"*|";"*) continue ;; esac
        modprobe "$module" || echo "lfspass-lab: $conf: modprobe $module FAILED"
    done < "$conf"
done

# --- save the host in the layout of `lfspass doctor --save` (lfspass/host/save.py): device
# folders where the kernel nests them, every link with the kernel's own relative text.
S=/save
rel=$(uname -r)
mkdir -p $S/proc/sys/kernel $S/sys/bus/pci/devices $S/sys/bus/pci/drivers $S/lib/modules/$rel $S/boot
cat /proc/cmdline > $S/proc/cmdline
cat /proc/cpuinfo > $S/proc/cpuinfo
echo "$rel" > $S/proc/sys/kernel/osrelease
for f in modules.builtin modules.dep; do
    [ -r /lib/modules/$rel/$f ] && cp /lib/modules/$rel/$f $S/lib/modules/$rel/
done
[ -r /boot/config-$rel ] && cp /boot/config-$rel $S/boot/
# Memory and huge page pools (doctor's hugepages[...] check reads them as on a live host).
cat /proc/meminfo > $S/proc/meminfo
for p in /sys/kernel/mm/hugepages/hugepages-*kB; do
    [ -d "$p" ] || continue
    mkdir -p "$S$p"
    for f in nr_hugepages free_hugepages; do cat "$p/$f" > "$S$p/$f"; done
done
for d in /sys/bus/pci/devices/*; do
    [ -e "$d" ] || continue
    a=${d##*/}
    ln -s "$(readlink "$d")" "$S/sys/bus/pci/devices/$a"
    o=$S$(readlink -f "$d")
    mkdir -p "$o"
    for f in vendor device class subsystem_vendor subsystem_device revision irq numa_node resource \
             enable driver_override modalias local_cpulist boot_vga; do
        [ -r "$d/$f" ] && cat "$d/$f" > "$o/$f" 2>/dev/null
    done
    [ -r "$d/config" ] && head -c 256 "$d/config" > "$o/config"
    if [ -L "$d/driver" ]; then
        mkdir -p "$S/sys/bus/pci/drivers/$(basename "$(readlink "$d/driver")")"
        ln -s "$(readlink "$d/driver")" "$o/driver"
    fi
    [ -L "$d/iommu_group" ] && ln -s "$(readlink "$d/iommu_group")" "$o/iommu_group"
    for c in "$d"/vfio-dev/vfio*; do [ -d "$c" ] && mkdir -p "$o/vfio-dev/${c##*/}"; done
done
for g in /sys/kernel/iommu_groups/*; do
    [ -d "$g/devices" ] || continue
    o=$S/sys/kernel/iommu_groups/${g##*/}
    mkdir -p "$o/devices"
    [ -r "$g/type" ] && cat "$g/type" > "$o/type"
    for m in "$g"/devices/*; do
        [ -L "$m" ] && ln -s "$(readlink "$m")" "$o/devices/${m##*/}"
    done
done
# Device nodes as empty files: /dev/vfio/N (groups), /dev/vfio/devices/vfioN (cdevs), /dev/iommu.
if [ -d /dev/vfio ]; then
    mkdir -p $S/dev/vfio
    for v in /dev/vfio/* /dev/vfio/devices/*; do
        [ -c "$v" ] || continue
        mkdir -p "$S${v%/*}"
        : > "$S$v"
    done
fi
[ -c /dev/iommu ] && mkdir -p $S/dev && : > $S/dev/iommu
# --- out-of-tree modules lfspass built ([[kernel.external_modules]]), each under updates/<name>/:
# loaded by name as any module, through modules.dep; one line each: name, file, modules.dep's
# entry for that name, and whether /sys/module shows it loaded (the lab verdict reads them).
for ko in /lib/modules/$rel/updates/*/*.ko*; do
    [ -e "$ko" ] || continue
    m=${ko##*/}; m=${m%%.ko*}
    dep=$(grep -o "^[^:]*/$m\.ko[^:]*:" /lib/modules/$rel/modules.dep | head -n 1 | tr -d :)
    if modprobe "$m" && [ -d "/sys/module/$(echo "$m" | tr - _)" ]; then state=loaded; else state=FAILED; fi
    echo "$m ${ko#/lib/modules/$rel/} ${dep:-none} $state" >> $S/external-modules.txt
    echo "lfspass-lab: external module $m (modules.dep: ${dep:-none}): $state"
done
dmesg > $S/dmesg.txt
echo "saved by the lfspass lab initramfs (busybox /init) from a QEMU guest" > $S/lfspass-saved.txt
# The nested lab's image (lfspass/lab/nested/image.py) adds /nested.sh: it runs the VM launcher
# and leaves the second guest's report in $S/nested, sent with the rest.
[ -x /nested.sh ] && S=$S /nested.sh

# --- what LFS's rc runs last in runlevel 3, once the system is up: only the boot-once lab's image
# carries /etc/rc.d (S99lfspass-confirm, which runs `lfspass boot confirm --at-boot`).
if [ -d /etc/rc.d/rc3.d ]; then
    for s in /etc/rc.d/rc3.d/S*; do
        [ -x "$s" ] && "$s" start
    done
fi

# --- send it: ttyS1 carries nothing but this, so kernel messages cannot interleave.
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{
    echo "----- BEGIN lfspass-lab host -----"
    tar -C $S -c . | gzip -c | base64
    echo "----- END lfspass-lab host -----"
} > /dev/ttyS1
echo "lfspass-lab: host state sent, powering off"
sync
poweroff -f
# Not reached; if poweroff fails the kernel panics on init's exit and panic=-1 ends QEMU.
