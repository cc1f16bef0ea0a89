"""The guest-side check: what a guest sees of its PCI devices, said by the guest itself.

An image guest carries ``/usr/local/sbin/lfspass-guest-check`` and a unit that runs it at every
boot, before the first-boot marker: one line per PCI device (address, vendor:device, class,
the driver bound to it) and, when NVIDIA's userspace is installed, what ``nvidia-smi -L``
says, on the serial line and in ``/var/lib/lfspass/guest-check.txt``.  The script reads sysfs
only (no pciutils in the image).  lfspass's own check boot records the report in
installed.json; ``lfspass doctor --guest VM`` prints it.  For an ISO guest the same script can
be copied in by hand (docs/howto/image-guests.md#what-the-guest-sees).
"""
from __future__ import annotations

import re

PREFIX = "lfspass-guest-check:"
SCRIPT_PATH = "usr/local/sbin/lfspass-guest-check"
UNIT = "lfspass-guest-check.service"
MAX_NVIDIA_LINES = 16   # nvidia-smi -L prints a line per GPU (and per MIG device)

SCRIPT = f"""\
#!/bin/sh
# Written by lfspass: the PCI devices this guest sees and their drivers, and what nvidia-smi -L
# says when NVIDIA's userspace is installed; on the serial line and in /var/lib/lfspass/guest-check.txt.
out=/var/lib/lfspass/guest-check.txt
mkdir -p /var/lib/lfspass
{{
    for d in /sys/bus/pci/devices/*; do
        [ -r "$d/vendor" ] || continue
        v=$(cat "$d/vendor"); p=$(cat "$d/device"); c=$(cat "$d/class")
        drv=none
        [ -L "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
        echo "{PREFIX} pci ${{d##*/}} ${{v#0x}}:${{p#0x}} class $(echo "${{c#0x}}" | cut -c1-4) driver $drv"
    done
    if command -v nvidia-smi >/dev/null 2>&1; then
        said=$(nvidia-smi -L 2>&1); rc=$?
        printf '%s\\n' "$said" | head -n {MAX_NVIDIA_LINES} | sed 's/^/{PREFIX} nvidia-smi: /'
        echo "{PREFIX} nvidia-smi exit $rc"
    else
        echo "{PREFIX} nvidia-smi not installed"
    fi
    echo "{PREFIX} done"
}} > "$out.tmp" && mv "$out.tmp" "$out"
cat "$out" > /dev/ttyS0
"""

UNIT_TEXT = f"""\
# Written by lfspass: the guest-side device check (/{SCRIPT_PATH}) at every boot,
# before the first-boot marker; its report is on the serial line and in /var/lib/lfspass/guest-check.txt.
[Unit]
Description=lfspass guest-side check: PCI devices, their drivers, nvidia-smi -L
After=multi-user.target
Before=lfspass-first-boot.service

[Service]
Type=oneshot
ExecStart=/{SCRIPT_PATH}

[Install]
WantedBy=multi-user.target
"""

_PCI = re.compile(r"pci (?P<address>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?P<id>[0-9a-f]{4}:[0-9a-f]{4}) "
                  r"class (?P<cls>[0-9a-f]{4}) driver (?P<driver>\S+)$")


def parse(serial: str) -> dict | None:
    """The last complete report in a serial log (a guest that rebooted says it again); None when there is none.

    ``{"pci": [{"address", "id", "class", "driver"}...], "nvidia_smi": {"installed", "exit", "lines"}}``;
    a driver ``None`` is a device no driver is bound to.
    """
    lines = [line[line.index(PREFIX) + len(PREFIX):].strip() for line in serial.splitlines() if PREFIX in line]
    ends = [i for i, text in enumerate(lines) if text == "done"]
    if not ends:
        return None
    start = max((i + 1 for i in ends[:-1]), default=0)
    pci: list[dict] = []
    smi_lines: list[str] = []
    smi: dict = {"installed": False, "exit": None, "lines": smi_lines}
    for text in lines[start:ends[-1]]:
        if m := _PCI.match(text):
            pci.append({"address": m["address"], "id": m["id"], "class": m["cls"],
                        "driver": None if m["driver"] == "none" else m["driver"]})
        elif text.startswith("nvidia-smi: "):
            smi_lines.append(text[len("nvidia-smi: "):])
        elif text.startswith("nvidia-smi exit "):
            smi.update(installed=True, exit=int(text.split()[-1]))
    return {"pci": pci, "nvidia_smi": smi}


def render(vm: str, report: dict | None, when: str = "") -> str:
    """What `lfspass doctor --guest VM` prints."""
    if report is None:
        return f"guest {vm}: no guest-side report (an image built before lfspass had the check; build it again)\n"
    out = [f"guest {vm}: {len(report['pci'])} PCI device(s) seen by the guest" + (f" at its check boot ({when})" if when else "")]
    out += [f"  {d['address']}  {d['id']}  class {d['class']}  driver {d['driver'] or '(none)'}" for d in report["pci"]]
    smi = report["nvidia_smi"]
    if not smi["installed"]:
        out.append("  nvidia-smi: not installed in the guest (installer.packages, e.g. nvidia-driver from non-free)")
    else:
        out += [f"  nvidia-smi -L: {line}" for line in smi["lines"]] or ["  nvidia-smi -L: (nothing)"]
        if smi["exit"]:
            out.append(f"  nvidia-smi exited {smi['exit']}: the driver does not see a GPU")
    return "\n".join(out) + "\n"
