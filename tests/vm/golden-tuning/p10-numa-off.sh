#!/bin/sh
# VM p10-numa-off: written by lfspass from @TMP@/p10-numa-off/r.toml; edit the recipe, not this file.
# The serial console and QEMU monitor share this terminal: Ctrl-A c switches, Ctrl-A x quits.
# Note: 0000:05:00.0 is a compute card (no display outputs): runs with it get no emulated VGA and no VNC, the serial console only; set vnc.enabled = true for them
exec qemu-system-x86_64 \
    -name p10-numa-off \
    -nodefaults \
    -machine q35 \
    -accel kvm \
    -cpu host,host-phys-bits=on \
    -m 32768 \
    -smp 8 \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file=/srv/lfspass/p10-numa-off/OVMF_VARS.fd \
    -drive if=none,id=disk0,format=qcow2,discard=unmap,file=/srv/lfspass/p10-numa-off/p10-numa-off.qcow2 \
    -device virtio-blk-pci,drive=disk0,bootindex=1 \
    -netdev user,id=net0,restrict=on \
    -device virtio-net-pci,netdev=net0,mac=52:54:00:58:ef:d6 \
    -display none \
    -serial mon:stdio \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 \
    -device vfio-pci,host=0000:05:00.0,bus=rp1,addr=00.0 \
    -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=65536 "$@"
