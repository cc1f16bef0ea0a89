#!/bin/sh
# VM t10-pinned-2m: written by lfspass from @TMP@/t10-pinned-2m/r.toml; edit the recipe, not this file.
# The serial console and QEMU monitor share this terminal: Ctrl-A c switches, Ctrl-A x quits.
# VNC: 127.0.0.1:5902 (from elsewhere: ssh -L 5902:127.0.0.1:5902 this-host).
# Note: memory on NUMA node 1, the node of 0000:82:00.0
# Note: vCPUs pinned to host CPUs 14-15,42-43 (tuning.cpus)
# Note: guest memory from 2M huge pages (4096 reserved at boot by the GRUB entry)
exec taskset -c 14-15,42-43 qemu-system-x86_64 \
    -name t10-pinned-2m \
    -nodefaults \
    -machine q35,memory-backend=mem0 \
    -accel kvm \
    -cpu host \
    -m 8192 \
    -smp 4 \
    -object memory-backend-memfd,id=mem0,size=8192M,hugetlb=on,hugetlbsize=2M,host-nodes=1,policy=bind \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file=/srv/lfspass/t10-pinned-2m/OVMF_VARS.fd \
    -drive if=none,id=disk0,format=qcow2,discard=unmap,file=/srv/lfspass/t10-pinned-2m/t10-pinned-2m.qcow2 \
    -device virtio-blk-pci,drive=disk0,bootindex=1 \
    -netdev user,id=net0,restrict=on \
    -device virtio-net-pci,netdev=net0,mac=52:54:00:a5:fb:c5 \
    -vga std \
    -vnc 127.0.0.1:2 \
    -serial mon:stdio \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 \
    -device vfio-pci,host=0000:82:00.0,bus=rp1,addr=00.0 "$@"
