#!/bin/sh
# /init of the nested lab's second guest (L2, lfspass/lab/nested/image.py): report on the serial
# console which PCI devices this guest sees and which driver bound each, then power off.
# The first guest (L1) keeps that console in a file and sends it to the host.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
read -r up _ < /proc/uptime
echo "lfspass-l2: up ${up} s on $(uname -r): $(cat /proc/cmdline)"
for d in /sys/bus/pci/devices/*; do
    [ -e "$d" ] || continue
    drv=none
    [ -L "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
    echo "lfspass-l2: pci ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") class=$(cat "$d/class") driver=$drv"
done
# The guest-side check an image guest runs at boot (lfspass/vm/image/guest_check.py), here too.
mount -t devtmpfs devtmpfs /dev
/usr/local/sbin/lfspass-guest-check
echo "lfspass-l2: done"
poweroff -f
