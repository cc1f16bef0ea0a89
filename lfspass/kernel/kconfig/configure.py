"""Configure a Kconfig tree: base + requests through the kernel's own conf, then every request verified.

The .config is what ``scripts/kconfig/conf --olddefconfig`` (a kernel tree's own, run as the
build runs it; for a bare Kconfig folder one built from the sources conf_source.py picks) makes
of the base with the requests written into it: exact by construction, and the only engine
that writes.  Each request is then read back from the result; one that did not take effect
stops the run with an explanation (conf's own words where it gave some, kconfiglib's
analysis where it parses the tree, else the symbol's Kconfig lines with file:line).
kconfiglib stays off this path unless a refusal needs explaining or ``resolve`` is asked.
"""
from __future__ import annotations

import lzma
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from lfspass.errors import KconfigError
from lfspass.fsutil import write_atomic
from lfspass.kernel.kconfig import conf_runner, input_stamp, scan_cache
from lfspass.kernel.kconfig.conf_runner import KernelConf, base_files, kconfig_env
from lfspass.kernel.kconfig.request_check import check_requests, holds, request_line
from lfspass.kernel.kconfig.result import Change, KconfigResult, Resolved, Skipped
from lfspass.kernel.kconfig.scan_cache import scan_cached
from lfspass.model import Request, config_values

if TYPE_CHECKING:   # what reads conf's result is imported while conf runs (_configure's meanwhile)
    from lfspass.kernel.kconfig.symbols import Source
    from lfspass.kernel.kconfig.upgrade_report import UpgradeReport

NAMED = ("tinyconfig", "defconfig", "allnoconfig", "alldefconfig", "allyesconfig", "allmodconfig")
_ENGINE = 3  # bump when the same inputs would give other bytes


def kernel_symbols(tree: Path, arch: str = "x86_64") -> set[str]:
    """Names of every symbol the tree's Kconfig files define (for its architecture)."""
    return set(scan_cached(Path(tree).resolve(), arch).syms)


def _read_base(base: str | Path | None, config: Path) -> str:
    path = config if base is None else Path(base)
    if base is None and not config.is_file():
        raise KconfigError(f"{config}: no such config file; create it or pass --base "
                           f"({', '.join(NAMED)} or a config file)")
    if not path.is_file():
        raise KconfigError(f"base config {base}: no such file; pass {', '.join(NAMED)} "
                           "or an existing config file (.xz works)")
    try:
        if path.name.endswith(".xz"):
            with lzma.open(path) as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise KconfigError(f"cannot read the starting config ({path}): {exc}; "
                           "pass a readable .config (plain or .xz)") from None
    return data.decode(errors="replace")


def _start(kc: KernelConf, base: str | Path | None, config: Path, tmp: Path) -> str:
    """The starting config text: a file's, or what ``make <named base>`` writes."""
    if isinstance(base, str) and base in NAMED:
        return conf_runner.named_base(kc, base, tmp)
    return _read_base(base, config)


def configure(tree: Path, config: Path, requests: list[Request], *,
              base: str | Path | None = None, resolve: bool = False, arch: str = "x86_64",
              resolve_hint: str = "--resolve", obj: Path | None = None,
              conf_source: str | Path | None = None) -> KconfigResult:
    """Start from ``base`` (or ``config``), apply ``requests``, write ``config`` if it changed.

    A request that does not hold in the result raises KconfigError explaining why; with
    ``resolve`` the settable symbols that unblock it are added first and reported.
    ``obj`` is the build's O= folder (conf is built there); None uses a cache folder.
    ``conf_source`` picks the kernel sources whose conf reads a Kconfig folder (conf_source.py).
    """
    tree, config = Path(tree).resolve(), Path(config)
    if base is not None and base not in NAMED:
        base = Path(base)
    requests = [Request(r.symbol.removeprefix("CONFIG_"), r.value, r.source, r.optional) for r in requests]
    old_bytes = config.read_bytes() if config.is_file() else None
    kc = conf_runner.locate(tree, arch, obj, conf_source)  # no conf, no .config: raises before anything is read
    key = input_stamp.inputs_key(tree=tree, arch=arch, resolve=resolve, base=base, engine=_ENGINE, conf=kc.kernel,
                           requests=sorted((r.symbol, r.value, r.source, r.optional) for r in requests),
                           base_files=input_stamp.files_key(tree, base_files(tree, base, arch)))
    if old_bytes is not None:
        hit = input_stamp.hit(config, key, tree, old_bytes)
        if hit:
            return KconfigResult(False, [], *hit)
    made = _configure(kc, config, requests, base, resolve, resolve_hint)
    changed = write_atomic(config, made.out)
    old = made.start if base is None else config_values(old_bytes.decode(errors="replace")) if old_bytes else {}
    new = made.got
    changes = [Change(s, old.get(s, ""), new.get(s, "")) for s in sorted(old.keys() | new.keys())
               if old.get(s, "") != new.get(s, "")]
    input_stamp.record(config, key, made.out, made.files, made.files_key, made.skipped, made.resolved)
    report = made.report
    return KconfigResult(changed, changes, made.skipped, made.resolved, report.short() if report else [], report)


class _Made(NamedTuple):
    """What one run of the kernel's conf made, and what configure() records of it."""

    out: bytes
    start: dict[str, str]     # the starting config's values
    got: dict[str, str]       # the result's values
    skipped: list[Skipped]
    resolved: list[Resolved]
    files: list[str]          # the Kconfig files read, and their stat key (the no-change stamp)
    files_key: list
    report: UpgradeReport | None


def _configure(kc: KernelConf, config: Path, requests: list[Request], base: str | Path | None, resolve: bool,
               hint: str) -> _Made:
    conf_ready = conf_runner.prepare(kc)   # a new build folder: conf is built while the tree is read
    # The cached index is taken on trust; its files are checked while conf runs (below).
    scanned = scan_cache.cached(kc.tree, kc.arch, trust=not resolve)
    try:
        wanted, skipped = check_requests(scanned.kinds, requests)
    except KconfigError:
        if scanned.fresh():
            raise
        scanned = scan_cache.cached(kc.tree, kc.arch)
        wanted, skipped = check_requests(scanned.kinds, requests)
    resolved: list[Resolved] = []
    begun: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lfspass-kconfig-") as tmp_name:
        tmp = Path(tmp_name)
        conf_ready()
        start = _start(kc, base, config, tmp)
        if resolve:
            from lfspass.kernel.kconfig.kconfiglib_adapter import resolve_extra
            resolved = resolve_extra(kc.tree, kc.kconfig_env()["ARCH"], start, wanted)
            for r in resolved:
                wanted.setdefault(r.symbol, (r.value, f"resolve, {r.why}"))
        work = tmp / "config"

        def meanwhile() -> None:
            """While the kernel's conf runs: the full view of the tree read (a thread), the
            starting values parsed, what reads the result imported."""
            scanned.prefetch()
            begun.update(config_values(start))
            from lfspass.kernel.kconfig import explain_lines, upgrade_report  # noqa: F401

        def run(kinds) -> tuple[list[str], str]:
            lines = [request_line(n, kinds[n].type, v) for n, (v, _s) in wanted.items()]
            work.write_text(start.rstrip("\n") + "\n" + "".join(l + "\n" for l in lines))
            # KCONFIG_WARN_CHANGED_INPUT (6.13+) makes conf name the inputs it changed.
            return lines, conf_runner.run_conf(kc, "olddefconfig", work, {"KCONFIG_WARN_CHANGED_INPUT": "1"},
                                               meanwhile=meanwhile)
        lines, warnings = run(scanned.kinds)
        if not scanned.fresh():   # a Kconfig file changed since the cache was written: read the tree again
            scanned = scan_cache.cached(kc.tree, kc.arch)
            wanted, skipped = check_requests(scanned.kinds, requests)
            if [request_line(n, scanned.kinds[n].type, v) for n, (v, _s) in wanted.items()] != lines:
                lines, warnings = run(scanned.kinds)
        out = work.read_text()
    begun = begun or config_values(start)
    kinds = scanned.kinds
    got = config_values(out)
    refused = [(n, v, got.get(n, ""), s) for n, (v, s) in wanted.items() if not holds(kinds[n].type, v, got.get(n))]
    src = scanned.source()
    if refused:
        from lfspass.kernel.kconfig import refusal_text as text
        why = "; ".join(_explain(kc.tree, kc.arch, src, out, refused, warnings, None if resolve else hint))
        raise KconfigError(why + (text.RESOLVE_FOUND_NOTHING if resolve else ""))
    # The report is about a config carried from elsewhere; a named base is made from this tree.
    report = _report(kc, src, begun, got, wanted, warnings) if begun and base not in NAMED else None
    return _Made(out.encode(), begun, got, skipped, resolved, src.files, scanned.key, report)


def _explain(tree: Path, arch: str, src: Source, out: str, refused: list, warnings: str,
             hint: str | None) -> list[str]:
    """One line per refusal: conf's own words for a value it rejected; else kconfiglib's analysis
    where it parses the tree, else the Kconfig lines; with what conf said about the symbol."""
    from lfspass.kernel.kconfig import explain_lines
    from lfspass.kernel.kconfig import refusal_text as text
    said = {name: conf_runner.warnings_for(warnings, name) for name, *_rest in refused}
    # conf_set_sym_val (confdata.c): "symbol value '0128' invalid for NR_CPUS".
    malformed = {name: l.removeprefix("warning:").strip() for name, *_rest in refused
                 for l in said[name] if "invalid for" in l}
    rest = [r for r in refused if r[0] not in malformed]
    try:
        from lfspass.kernel.kconfig.kconfiglib_adapter import explain_all
        texts = explain_all(tree, kconfig_env(arch)["ARCH"], out, rest, hint, arch) if rest else []
    except KconfigError:
        texts = [""] * len(rest)
    explained = dict(zip([r[0] for r in rest], texts, strict=True))
    lines = []
    for name, asked, got, source in refused:
        if name in malformed:
            lines.append(text.conf_refused(name, asked, source, malformed[name], src.syms[name].type))
            continue
        line = explained[name] or explain_lines.explain(src, name, asked, got, source, config_values(out), hint, arch)
        lines.append(text.with_conf_words(line, said[name]))
    return lines


def _report(kc: KernelConf, src: Source, start: dict[str, str], got: dict[str, str], wanted: dict,
            warnings: str) -> UpgradeReport:
    """The upgrade report of a carried config (upgrade_report.py)."""
    from lfspass.kernel.kconfig import upgrade_report
    from lfspass.kernel.release import makefile_version
    said = "\n".join(line for line in warnings.splitlines() if "override: reassigning" not in line)
    return upgrade_report.build(kc.tree, makefile_version(kc.kernel), src, start, got, wanted, said)


def verify(tree: Path, config: Path, requests: list[Request], arch: str = "x86_64") -> list[str]:
    """The requests ``config`` breaks (one line each, explained); [] when every one holds."""
    tree = Path(tree).resolve()
    text = config.read_text(errors="replace")
    got = config_values(text)
    src = scan_cached(tree, arch)
    broken = [(r.symbol, r.value, got.get(r.symbol, ""), r.source) for r in requests
              if r.symbol in src.syms and not holds(src.syms[r.symbol].type, r.value, got.get(r.symbol))]
    return _explain(tree, arch, src, text, broken, "", None) if broken else []
