"""A stand-in for the kernel's PCI driver core, acting on a synthetic sysfs (tests/make_fixtures.py trees).

lfspass writes every sysfs attribute through ``lfspass.journal.sysfs``'s writer; this one
does to the tree what drivers/base/bus.c, drivers/base/dd.c and drivers/pci/pci-driver.c do:

* ``devices/D/driver_override``: "vfio-pci\\n" sets it, "\\n" clears it (reads "(null)" then);
* ``drivers/X/unbind`` with D: removes the ``driver`` link; ENODEV when D is not on X;
* ``drivers/X/bind`` with D: EBUSY when D has a driver, ENODEV when X does not match D
  (with an override only that driver matches), the probe's error when X's probe fails;
* ``drivers_probe`` with D: on no driver, the first matching driver whose probe works takes
  it; a failing probe is not an error (dd.c returns probe errors as positive values), so the
  write succeeds and D stays on no driver: "probe succeeded but no driver".

``matches`` says which driver's id table takes which device (the host driver, e.g. nouveau),
``vfio_ids`` stands for vfio-pci's ids= list, ``failing`` for drivers whose probe fails
(vfio-pci without an IOMMU returns -EINVAL) and ``fail`` injects an errno into one write.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from lfspass.journal.sysfs import SysfsWriter

PCI = "sys/bus/pci"


def _oserror(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


class FakeKernel(SysfsWriter):
    def __init__(self, root: Path, matches: dict[str, str], *, vfio_ids: tuple[str, ...] = (),
                 failing: tuple[str, ...] = (), fail: Callable[[str, str], int | None] | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.matches, self.vfio_ids, self.failing = dict(matches), set(vfio_ids), set(failing)
        self.fail = fail or (lambda rel, value: None)
        self.writes: list[tuple[str, str]] = []
        self.prepare()

    # -- the attribute files a live sysfs has and a saved copy lacks -----------------------------
    def prepare(self, loaded: tuple[str, ...] = ("vfio-pci",)) -> None:
        """Add drivers_probe and each driver's bind/unbind, as on a live sysfs; load ``loaded`` drivers."""
        bus = self.root / PCI
        (bus / "drivers_probe").touch()
        for name in {*loaded, *self.matches.values()}:
            (bus / "drivers" / name).mkdir(parents=True, exist_ok=True)
        for folder in (bus / "drivers").iterdir():
            for attr in ("bind", "unbind", "new_id"):
                (folder / attr).touch()

    # -- what the driver core does with a write ---------------------------------------------------
    def write(self, path: Path, value: str) -> None:
        rel = os.path.relpath(os.path.realpath(path), self.root)
        self.writes.append((rel, value))
        code = self.fail(rel, value)
        if code:
            raise _oserror(code, path)
        if not os.path.exists(path):
            raise _oserror(errno.ENOENT, path)
        if rel.endswith("/driver_override"):
            text = value.split("\n", 1)[0]
            Path(path).write_text((text or "(null)") + "\n")
        elif rel.endswith("/unbind"):
            self._unbind(Path(path).parent.name, value.strip(), path)
        elif rel.endswith("/bind"):
            self._bind(Path(path).parent.name, value.strip(), path)
        elif rel == f"{PCI}/drivers_probe":
            self._probe(value.strip())
        else:
            raise _oserror(errno.EACCES, path)

    def _dev(self, address: str) -> Path:
        return Path(os.path.realpath(self.root / PCI / "devices" / address))

    def driver_of(self, address: str) -> str | None:
        try:
            return os.path.basename(os.readlink(self._dev(address) / "driver"))
        except OSError:
            return None

    def _override(self, address: str) -> str | None:
        text = (self._dev(address) / "driver_override").read_text().strip()
        return None if text in ("", "(null)") else text

    def _id(self, address: str) -> str:
        dev = self._dev(address)
        return f"{(dev / 'vendor').read_text().strip()[2:]}:{(dev / 'device').read_text().strip()[2:]}"

    def _matches(self, driver: str, address: str) -> bool:
        override = self._override(address)
        if override:
            return driver == override
        return self.matches.get(address) == driver or (driver == "vfio-pci" and self._id(address) in self.vfio_ids)

    def _attach(self, driver: str, address: str) -> None:
        dev, drv = self._dev(address), self.root / PCI / "drivers" / driver
        (dev / "driver").symlink_to(os.path.relpath(drv, dev))
        (drv / address).symlink_to(os.path.relpath(dev, drv))

    def _unbind(self, driver: str, address: str, path: Path) -> None:
        if self.driver_of(address) != driver:
            raise _oserror(errno.ENODEV, path)
        (self._dev(address) / "driver").unlink()
        (self.root / PCI / "drivers" / driver / address).unlink()

    def _bind(self, driver: str, address: str, path: Path) -> None:
        if self.driver_of(address):
            raise _oserror(errno.EBUSY, path)
        if not self._matches(driver, address):
            raise _oserror(errno.ENODEV, path)
        if driver in self.failing:
            raise _oserror(errno.EINVAL, path)
        self._attach(driver, address)

    def _probe(self, address: str) -> None:
        if self.driver_of(address):
            return
        # The bus tries drivers in registration order; vfio-pci first, as lfspass's softdep lines load it first.
        drivers = sorted((p.name for p in (self.root / PCI / "drivers").iterdir()), key=lambda d: (d != "vfio-pci", d))
        for driver in drivers:
            if self._matches(driver, address) and driver not in self.failing:
                self._attach(driver, address)
                return
