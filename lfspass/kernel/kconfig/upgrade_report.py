"""The upgrade report: what carrying a config into another tree changed, why, and what may break the host.

Built by configure() when a config is carried (``base = "current"`` or a config file): every
symbol on -> off and off -> on, every other changed value, each with the reason the new tree
gives (upgrade_reason.py, from its Kconfig lines), the new symbols left off in the families this tool
is about (IOMMU, VFIO, KVM), and the kernel's own warnings.  ``classify()`` then adds the
"likely to break the host" section from the host's loaded modules, ordered by harm.  The
report is the one model the short lines, ``upgrade-report.txt`` and ``upgrade-report.json``
are rendered from; its ``digest`` is what a recipe acknowledges (``accept_report``).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lfspass.kernel.kconfig import symbols, upgrade_reason
from lfspass.kernel.kconfig.explain_lines import evaluate

ON = ("y", "m")
# Families a user of this tool cares about, by the folder of the symbol's Kconfig file.
FAMILIES = (("drivers/iommu/", "IOMMU"), ("drivers/vfio/", "VFIO"), ("arch/x86/kvm/", "KVM"), ("virt/", "KVM"))
# What losing a symbol does to a running host, worst first: (category, Kconfig folders, what it costs).
HARM = (
    ("storage", ("drivers/ata/", "drivers/scsi/", "drivers/nvme/", "drivers/block/", "drivers/md/", "block/"),
     "disks or the root file system may not be found at boot"),
    ("filesystems", ("fs/",), "a file system the host mounts may not mount"),
    ("network drivers", ("drivers/net/",), "the host may lose its network interfaces"),
    ("network filtering", ("net/netfilter/", "net/ipv4/netfilter/", "net/ipv6/netfilter/", "net/bridge/netfilter/",
                           "net/sched/"),
     "firewall rules that use it stop loading, silently"),
    ("hypervisor support", ("drivers/hv/", "drivers/xen/", "drivers/virtio/", "arch/x86/hyperv/", "arch/x86/xen/"),
     "a host that runs as a guest of that hypervisor loses its devices"),
    ("passthrough", ("drivers/iommu/", "drivers/vfio/", "arch/x86/kvm/", "virt/"),
     "VMs or device passthrough stop working"),
)
# Losing these is a break even when the host has not loaded them: rules load them on use.
ALWAYS = {"network filtering"}
_SHORT = 8     # names per line in the printed summary


@dataclass
class Move:
    """One symbol whose value the carried config did not keep; '' = absent from that config."""

    symbol: str
    old: str
    new: str
    reason: str = ""
    where: str = ""          # file:line of its definition in the new tree ('' when removed)
    category: str = ""       # a HARM category, '' for none
    modules: list[str] = field(default_factory=list)   # module names its Makefile line builds


@dataclass
class UpgradeReport:
    """What carrying a config into ``tree`` did (see the module doc)."""

    tree: str
    version: str
    off: list[Move] = field(default_factory=list)        # y/m -> n or gone
    on: list[Move] = field(default_factory=list)         # n/absent -> y/m
    changed: list[Move] = field(default_factory=list)    # y <-> m, numbers, strings
    new_off: list[Move] = field(default_factory=list)    # new to this config, left off, families first
    new_off_total: int = 0
    warnings: list[str] = field(default_factory=list)   # the kernel's conf, as it said them
    breaks: list[Move] = field(default_factory=list)     # likely to break the host, worst first
    host: str = ""                                       # where the loaded modules were read ('' = unknown)
    requests_moved: list[str] = field(default_factory=list)   # "SYM: old -> new" a request changed

    @property
    def digest(self) -> str:
        """12 hex digits over the host-breaking section: what ``accept_report`` names."""
        return digest_of(self.version, [[m.symbol, m.old, m.new] for m in self.breaks])

    @property
    def moved(self) -> bool:
        """Whether carrying changed anything (a rerun on the config it already made changes nothing)."""
        return bool(self.off or self.on or self.changed)

    def to_json(self) -> dict:
        return {"tree": self.tree, "version": self.version, "digest": self.digest, "host_modules_from": self.host,
                "likely_to_break_the_host": [asdict(m) for m in self.breaks],
                "on_to_off": [asdict(m) for m in self.off], "off_to_on": [asdict(m) for m in self.on],
                "changed": [asdict(m) for m in self.changed],
                "new_left_off": [asdict(m) for m in self.new_off], "new_left_off_total": self.new_off_total,
                "requests_moved": self.requests_moved, "kernel_warnings": self.warnings}

    def short(self) -> list[str]:
        """The lines printed after configure (the whole report is in the files)."""
        out = []
        if self.breaks:
            out.append(f"{len(self.breaks)} change(s) likely to break the host: "
                       + by_category([(m.category, m.symbol) for m in self.breaks]))
        if self.off:
            gone = [m for m in self.off if not m.where]
            out.append(f"{len(self.off)} symbol(s) on -> off" + (f" ({len(gone)} not in this tree)" if gone else "")
                       + f": {_names(_first_visible(self.off))}")
        if self.on:
            out.append(f"{len(self.on)} symbol(s) off -> on: {_names(_first_visible(self.on))}")
        if self.changed:
            out.append(f"{len(self.changed)} value(s) changed: "
                       + _names([f"{m.symbol} {m.old} -> {m.new}" for m in self.changed]))
        fam = [m.symbol for m in self.new_off if m.category]
        if fam:
            out.append(f"new, off, and settable now: {_names(fam)}")
        if self.requests_moved:
            out.append("requests that changed a starting value: " + ", ".join(self.requests_moved))
        if self.warnings:
            out.append(f"the kernel's conf warned {len(self.warnings)} time(s): {self.warnings[0]}"
                       + (" ..." if len(self.warnings) > 1 else ""))
        return out

    def text(self) -> str:
        """upgrade-report.txt: every section in full."""
        lines = [f"lfspass upgrade report: a config carried into {self.tree} (Linux {self.version})",
                 f"digest {self.digest} (accept_report names it)", ""]

        def section(title: str, moves: list[Move], extra: str = "") -> None:
            lines.append(f"## {title} ({len(moves)}){extra}")
            lines.extend(f"{m.symbol}: {m.old or 'absent'} -> {m.new or 'absent'}"
                         + (f" [{m.category}]" if m.category else "") + (f": {m.reason}" if m.reason else "")
                         + (f" ({m.where})" if m.where else "") for m in moves)
            lines.append("")

        host = f" (loaded modules from {self.host})" if self.host else " (the host's loaded modules are unknown)"
        section("likely to break the host, worst first", self.breaks, host)
        section("on -> off", self.off)
        section("off -> on", self.on)
        section("changed values", self.changed)
        section("new symbols left off that can be set now (IOMMU, VFIO, KVM)", self.new_off,
                f" of {self.new_off_total}" if self.new_off_total > len(self.new_off) else "")
        lines.append(f"## requests that changed a starting value ({len(self.requests_moved)})")
        lines.extend(self.requests_moved)
        lines.append("")
        lines.append(f"## the kernel's conf said ({len(self.warnings)})")
        lines.extend(self.warnings)
        return "\n".join(lines).rstrip("\n") + "\n"


def digest_of(version: str, rows: list[list[str]]) -> str:
    """The digest of a host-breaking section: [symbol, old, new] rows of one upgrade."""
    return hashlib.sha256(json.dumps([version, rows]).encode()).hexdigest()[:12]


def _first_visible(moves: list[Move]) -> list[str]:
    """Names, those in a harm category first, then those the tree still has, then the rest."""
    return [m.symbol for m in sorted(moves, key=lambda m: (not m.category, not m.where, m.symbol))]


def _names(names: list[str], limit: int = _SHORT) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def by_category(rows: list[tuple[str, str]], limit: int = _SHORT) -> str:
    """``cat: A, B and N more; cat2: ...`` of (category, symbol) rows, in their order."""
    by_cat: dict[str, list[str]] = {}
    for cat, name in rows:
        by_cat.setdefault(cat, []).append(name)
    return "; ".join(f"{cat}: {_names(names, limit)}" for cat, names in by_cat.items())


def _folder(src: symbols.Source, name: str) -> str:
    sym = src.syms.get(name)
    return sym.defs[0].rsplit(":", 1)[0] if sym and sym.defs else ""


def _family(path: str) -> str:
    return next((fam for prefix, fam in FAMILIES if path.startswith(prefix)), "")


def _category(path: str) -> str:
    return next((cat for cat, prefixes, _why in HARM if path.startswith(prefixes)), "")


def build(tree: Path, version: str, src: symbols.Source, start: dict[str, str], got: dict[str, str],
          wanted: dict[str, tuple[str, str]], warnings: str) -> UpgradeReport:
    """The report for ``start`` carried into ``tree`` with result ``got``; ``wanted`` maps each
    request to (value, source); ``warnings`` is what the kernel's conf printed."""
    rep = UpgradeReport(str(tree), version)
    rep.requests_moved = sorted(f"{s}: {start[s]} -> {v}" for s, (v, _src) in wanted.items() if start.get(s, v) != v)
    for name in sorted(start.keys() | got.keys()):
        old, new = start.get(name, ""), got.get(name, "")
        if old == new or (old in ("", "n") and new in ("", "n")) or name in wanted:
            continue
        path = _folder(src, name)
        move = Move(name, old, new, where=(src.syms[name].defs[0] if name in src.syms and src.syms[name].defs else ""),
                    category=_category(path))
        move.reason = upgrade_reason.reason(src, name, old, new, start, got)
        if old in ON and new not in ON:
            rep.off.append(move)
        elif old not in ON and new in ON:
            rep.on.append(move)
        elif name in start and not (name in src.syms and not src.syms[name].prompt
                                    and src.syms[name].type not in ("bool", "tristate")):
            rep.changed.append(move)   # not the compiler's own strings (CC_VERSION_TEXT, GCC_VERSION)
    # New to this config and settable now: a prompt whose dependencies hold in the result (a
    # symbol the old tree had, hidden then and now, is in neither config and not new).
    held: dict[str, bool] = {}   # an enclosing if/menu line is shared by hundreds of symbols: read once

    def met(expr: str) -> bool:
        value = held.get(expr)
        if value is None:
            value = held[expr] = (evaluate(expr, got) or 0) > 0
        return value

    def settable(sym: symbols.Sym) -> bool:
        return all(met(e) for e, _w in sym.depends)
    new_off = [n for n, s in src.syms.items() if n not in start and s.prompt and s.type in ("bool", "tristate")
               and got.get(n, "n") == "n" and settable(s)]
    fam = sorted((n for n in new_off if _family(_folder(src, n))), key=lambda n: (_family(_folder(src, n)), n))
    rep.new_off = [Move(n, "", got.get(n, ""), where=src.syms[n].defs[0], category=_family(_folder(src, n)))
                   for n in fam]
    rep.warnings = [re.sub(r"^\S+:\d+:", "", line).strip() for line in warnings.splitlines() if line.strip()]
    rep.new_off_total = len(new_off)
    return rep


_OBJ = re.compile(r"^obj-\$\(CONFIG_(\w+)\)\s*[:+]?=\s*((?:[^\n\\]|\\\n)*)", re.M)


def _modules(tree: Path, folder: str, cache: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """CONFIG symbol -> module names, from the Makefile beside a Kconfig file (``obj-$(CONFIG_X) += x.o``)."""
    if folder not in cache:
        table: dict[str, list[str]] = {}
        try:
            text = (tree / folder).parent.joinpath("Makefile").read_text(errors="replace")
        except OSError:
            text = ""
        for sym, rest in _OBJ.findall(text):
            table.setdefault(sym, []).extend(w[:-2].replace("-", "_") for w in rest.replace("\\\n", " ").split()
                                             if w.endswith(".o"))
        cache[folder] = table
    return cache[folder]


def loaded_modules(host_root: Path) -> set[str] | None:
    """The module names in ``<host_root>/proc/modules``; None when it cannot be read."""
    try:
        text = (host_root / "proc" / "modules").read_text()
    except OSError:
        return None
    return {line.split()[0].replace("-", "_") for line in text.splitlines() if line.split()}


def classify(rep: UpgradeReport, tree: Path, src: symbols.Source, loaded: set[str] | None, host: str) -> None:
    """Fill ``rep.breaks``: the on -> off moves in a HARM category that the host uses (built in
    before, loaded now, or the host unknown; network filtering always), worst first."""
    cache: dict[str, dict[str, list[str]]] = {}
    rank = {cat: i for i, (cat, _p, _w) in enumerate(HARM)}
    breaks = []
    for m in rep.off:
        if not m.category or not m.where or not src.syms[m.symbol].prompt:
            continue   # promptless plumbing goes with what uses it; that is listed itself
        folder = _folder(src, m.symbol)
        m.modules = _modules(tree, folder, cache).get(m.symbol, []) if folder else []
        in_use = m.old == "y" or loaded is None or bool(set(m.modules) & loaded)
        if m.category in ALWAYS or in_use:
            breaks.append(m)
    rep.breaks = sorted(breaks, key=lambda m: (rank[m.category], m.symbol))
    rep.host = host if loaded is not None else ""


def write(rep: UpgradeReport, build_dir: Path) -> tuple[Path, Path]:
    """``upgrade-report.json`` and ``.txt`` in ``build_dir`` (atomic)."""
    from lfspass.fsutil import write_atomic

    js, txt = build_dir / "upgrade-report.json", build_dir / "upgrade-report.txt"
    write_atomic(txt, rep.text())
    write_atomic(js, json.dumps(rep.to_json(), indent=1) + "\n")
    return js, txt


def remove(build_dir: Path) -> None:
    """No carried config, no report: a stale one must not stop (or explain) this build."""
    for name in ("upgrade-report.json", "upgrade-report.txt"):
        (build_dir / name).unlink(missing_ok=True)


def harm_of(category: str) -> str:
    return next((why for cat, _p, why in HARM if cat == category), "")
