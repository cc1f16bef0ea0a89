#!/bin/sh
# VM t10-node1-1g: written by lfspass from @TMP@/t10-node1-1g/r.toml; edit the recipe, not this file.
# The serial console and QEMU monitor share this terminal: Ctrl-A c switches, Ctrl-A x quits.
# Note: vCPUs and memory on NUMA node 1, the node of 0000:82:00.0 (host CPUs 14-27,42-55)
# Note: guest memory from 1G huge pages (16 reserved at boot by the GRUB entry)
# Note: 0000:82:00.0 is a compute card (no display outputs): runs with it get no emulated VGA and no VNC, the serial console only; set vnc.enabled = true for them
exec taskset -c 14-27,42-55 qemu-system-x86_64 \
    -name t10-node1-1g \
    -nodefaults \
    -machine q35,memory-backend=mem0 \
    -accel kvm \
    -cpu host \
    -m 16384 \
    -smp 8 \
    -object memory-backend-memfd,id=mem0,size=16384M,hugetlb=on,hugetlbsize=1G,host-nodes=1,policy=bind \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file=/srv/lfspass/t10-node1-1g/OVMF_VARS.fd \
    -drive if=none,id=disk0,format=qcow2,discard=unmap,file=/srv/lfspass/t10-node1-1g/t10-node1-1g.qcow2 \
    -device virtio-blk-pci,drive=disk0,bootindex=1 \
    -netdev user,id=net0,restrict=on \
    -device virtio-net-pci,netdev=net0,mac=52:54:00:eb:51:a1 \
    -display none \
    -serial mon:stdio \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 \
    -device vfio-pci,host=0000:82:00.0,bus=rp1,addr=00.0 "$@"
