#!/bin/sh
# VM d2l: written by lfspass from @TMP@/t10-iommufd-libvirt9/r.toml; edit the recipe, not this file.
# The serial console and QEMU monitor share this terminal: Ctrl-A c switches, Ctrl-A x quits.
# Note: vfio_backend = iommufd: @TMP@/t10-iommufd-libvirt9/bin/qemu-system-x86_64 lists the iommufd object, so the devices use -object iommufd,id=iommufd0 (/dev/iommu, /dev/vfio/devices/vfioN)
# Note: the libvirt XML keeps the group path: <driver iommufd="yes"/> needs libvirt 12.1.0 (libvirt 9.0.0)
# Note: 0000:82:00.0 is a compute card (no display outputs): runs with it get no emulated VGA and no VNC, the serial console only; set vnc.enabled = true for them
exec qemu-system-x86_64 \
    -name d2l \
    -nodefaults \
    -machine q35 \
    -accel kvm \
    -cpu host \
    -m 16384 \
    -smp 8 \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file=/srv/lfspass/d2l/OVMF_VARS.fd \
    -drive if=none,id=disk0,format=qcow2,discard=unmap,file=/srv/lfspass/d2l/d2l.qcow2 \
    -device virtio-blk-pci,drive=disk0,bootindex=1 \
    -netdev user,id=net0,restrict=on \
    -device virtio-net-pci,netdev=net0,mac=52:54:00:4f:18:0e \
    -display none \
    -serial mon:stdio \
    -object iommufd,id=iommufd0 \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 \
    -device vfio-pci,host=0000:82:00.0,bus=rp1,addr=00.0,iommufd=iommufd0,multifunction=on \
    -device vfio-pci,host=0000:82:00.1,bus=rp1,addr=00.1,iommufd=iommufd0 "$@"
