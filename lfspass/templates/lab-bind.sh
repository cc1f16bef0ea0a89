#!/bin/sh
# /nested.sh of the runtime-bind lab's initramfs (lfspass/lab/bind/image.py): lab-init.sh runs it
# after it saved the host as booted.  It runs the real `lfspass bind` / `lfspass release` (Debian's
# python3, /usr/bin/lfspass) on QEMU's e1000e and on one shared IOMMU group, and leaves one line
# per step in $S/bind/steps.txt (name, exit code, command, each device's driver link after, the
# network interfaces then) and each step's output in $S/bind/NAME.out; lfspass/lab/bind/verdict.py
# judges them.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
B=$S/bind
mkdir -p "$B"

id_of() { echo "$(cat "$1/vendor"):$(cat "$1/device")" | sed 's/0x//g'; }
driver_of() { if [ -L "/sys/bus/pci/devices/$1/driver" ]; then basename "$(readlink "/sys/bus/pci/devices/$1/driver")"; else echo none; fi; }
group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }

# The devices by id and place: e1000e (8086:10d3) on the root bus on its own; behind the
# pci-bridge (bus not 00) a second e1000e and pci-testdev (1b36:0005), one IOMMU group.
E1=; E2=; T=
for d in /sys/bus/pci/devices/*; do
    a=${d##*/}
    case "$(id_of "$d"):$a" in
        8086:10d3:0000:00:*) E1=$a ;;
        8086:10d3:*) E2=$a ;;
        1b36:0005:*) T=$a ;;
    esac
done
echo "devices e1000e=${E1:-none} group_e1000e=${E2:-none} group_testdev=${T:-none}" > "$B/devices.txt"
for a in $E1 $E2 $T; do echo "group $a $(group_of "$a")" >> "$B/devices.txt"; done
echo "lfspass-lab: bind steps on e1000e ${E1:-none}, group ${E2:-none} + ${T:-none}"

# step NAME CMD...: run it, then record its exit code, each device's driver and the interfaces.
step() {
    name=$1; shift
    "$@" > "$B/$name.out" 2>&1
    rc=$?
    drivers=
    for a in $E1 $E2 $T; do drivers="$drivers $a=$(driver_of "$a")"; done
    nets=$(ls /sys/class/net 2>/dev/null | tr '\n' ',')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$*" "${drivers# }" "${nets%,}" >> "$B/steps.txt"
    echo "lfspass-lab: step $name: exit $rc:$drivers; net: ${nets%,}"
}

step boot true
[ -n "$E1" ] && [ -n "$E2" ] && [ -n "$T" ] || { echo "lfspass-lab: bind devices missing" > "$B/error"; exit 0; }
# 1. e1000e to vfio-pci (with its cdev) and back, and a holder of its /dev/vfio/N refusing the release.
step bind lfspass bind "$E1"
# On an iommufd kernel (vfio_backend = "iommufd") the bound e1000e gets its VFIO cdev too.
step cdev sh -c "ls /sys/bus/pci/devices/$E1/vfio-dev /dev/vfio/devices && ls /dev/iommu"
G=$(group_of "$E1")
sleep 600 < "/dev/vfio/$G" &
HOLDER=$!
sleep 1
echo "$HOLDER /dev/vfio/$G" > "$B/holder.txt"
step release-held lfspass release "$E1"
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null
step release lfspass release "$E1"
# 2. The shared group: pci-testdev alone is refused (the group's e1000e is on its driver);
#    the e1000e named takes pci-testdev (on no driver) along; release gives both back.
step group-refused lfspass bind "$T"
step group-bind lfspass bind "$E2"
step group-release lfspass release "$E2"
exit 0
