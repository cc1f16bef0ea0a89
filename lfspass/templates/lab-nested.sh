#!/bin/sh
# /nested.sh of the nested lab's first guest (L1, lfspass/lab/nested/image.py), run by /init
# (lab-init.sh) once L1's host state is saved in $S: start the VM launcher `doit vm` wrote,
# unchanged, at the path it has on the host, with the second guest's kernel and initramfs
# appended (the launcher passes "$@" on to QEMU).  L2's console, QEMU's messages, the argv
# QEMU really ran with and the timings go to $S/nested, which /init sends to the host.
. /nested/run.conf
N=$S/nested
mkdir -p "$N"
mount -t tmpfs tmpfs /dev/shm 2>/dev/null || { mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm; }
ls -l /dev/vfio > "$N/dev-vfio.txt" 2>&1
read -r t0 _ < /proc/uptime
echo "lfspass-lab: nested: running $LAUNCHER"
"$LAUNCHER" -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$L2_APPEND" -no-reboot \
    < /dev/null > "$N/l2.log" 2> "$N/qemu.err" &
pid=$!
# Huge pages before L2, while it runs (sampled every half second) and after: the verdict's figures.
grep '^HugePages_' /proc/meminfo > "$N/hugepages-before"
( while [ -d /proc/$pid ]; do grep '^HugePages_Free:' /proc/meminfo; usleep 500000; done ) > "$N/hugepages-during" &
sampler=$!
# The launcher execs QEMU, so the same pid shows QEMU's own argv once the exec is done.
i=0
while [ $i -lt 600 ] && [ -d /proc/$pid ]; do
    case "$(readlink /proc/$pid/exe 2>/dev/null)" in
        *qemu-system*) tr '\0' '\n' < /proc/$pid/cmdline > "$N/argv"; break ;;
    esac
    usleep 20000
    i=$((i + 1))
done
wait $pid
echo $? > "$N/status"
wait $sampler
grep '^HugePages_' /proc/meminfo > "$N/hugepages-after"
read -r t1 _ < /proc/uptime
echo "$t0 $t1" > "$N/uptime"
echo "lfspass-lab: nested: QEMU exited with status $(cat "$N/status") after $t0 .. $t1 s of uptime"
