"""The scan of a tree's Kconfig files (symbols.py), kept in process and on disk until a file changes.

The cache file is two JSON lines: an index (name -> Kind: what a request needs before conf
runs) and the symbols.  configure() reads the index, starts the kernel's conf, and reads the
symbols in a thread meanwhile (``Cached.prefetch``), so a current cache costs next to nothing.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from lfspass.errors import LfspassError
from lfspass.fsutil import write_atomic
from lfspass.kernel.kconfig import input_stamp
from lfspass.kernel.kconfig.conf_runner import kconfig_env
from lfspass.kernel.kconfig.conf_source import cache_root
from lfspass.kernel.kconfig.symbols import Kind, Source, Sym, scan

_FORMAT = 4   # of the file: 2 added prompt_text, 3 the index line, 4 rows and shared blocks


class Cached:
    """A tree's scan as the cache holds it: the index at once, the full view when asked.

    The cache file is two JSON lines, the index (name -> Kind, ~1 MB smaller than the rest)
    and the symbols, so configure() checks requests from the index and reads the symbols in
    a thread while the kernel's conf runs (``prefetch``); ``source()`` waits for them.
    """

    def __init__(self, kinds: Mapping[str, Kind], key: list, load: Callable[[], Source],
                 check: Callable[[], bool] | None = None) -> None:
        self.kinds = kinds
        self.key = key   # input_stamp.files_key of the Kconfig files read
        self._load = load
        self._check = check   # an index taken on trust: whether the files are still as it says
        self.stale = False
        self._src: Source | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            if self._check is not None and not self._check():
                self.stale = True   # a Kconfig file changed after the cache was written
                return
            self._src = self._load()
        except BaseException as exc:  # re-raised by source(), in the caller's thread
            self._error = exc

    def prefetch(self) -> None:
        if self._src is None and self._thread is None and not self.stale:
            self._thread = threading.Thread(target=self._run, name="lfspass-kconfig-scan", daemon=True)
            self._thread.start()

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        elif self._src is None and self._error is None and not self.stale:
            self._run()

    def fresh(self) -> bool:
        """False when the index was taken on trust and a Kconfig file has changed since: the
        caller reads the tree again (``cached()``) and redoes what it did from the index."""
        self._wait()
        return not self.stale

    def source(self) -> Source:
        self._wait()
        if self._error is not None:
            raise self._error
        if self.stale:
            raise RuntimeError("scan_cache: stale index used; call cached() again")
        assert self._src is not None
        return self._src


class _Kinds(Mapping[str, Kind]):
    """The index as read: a Kind is made for the names asked (a request touches a handful of 18,000)."""

    def __init__(self, rows: dict[str, list]) -> None:
        self._rows = rows

    def __getitem__(self, name: str) -> Kind:
        return Kind(*self._rows[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows


_MEM: dict[str, tuple[Source, list]] = {}


def _kinds(src: Source) -> Mapping[str, Kind]:
    return {n: Kind(s.type, s.transitional, s.defs[0]) for n, s in src.syms.items()}


def _syms_json(syms: dict[str, Sym]) -> dict:
    """The symbols line: a row per symbol, the dependency lines it shares with others
    (an enclosing if/menu is on hundreds of symbols) kept once in ``blocks``."""
    blocks: dict[tuple[str, str], int] = {}
    rows = {n: [s.type, s.defs, s.prompt, s.prompt_text, s.transitional,
                [blocks.setdefault((e, w), len(blocks)) for e, w in s.depends], s.selected_by, s.ranges, s.choice]
            for n, s in syms.items()}
    return {"blocks": list(blocks), "syms": rows}


def _syms_from(data: dict) -> dict[str, Sym]:
    blocks = data["blocks"]
    return {n: Sym(n, kind, defs, prompt, text, trans, [blocks[i] for i in deps], sel, ranges, choice)
            for n, (kind, defs, prompt, text, trans, deps, sel, ranges, choice) in data["syms"].items()}


def _current(tree: Path, index: dict) -> bool:
    return [list(x) for x in input_stamp.files_key(tree, index["files"])] == index["key"]


def _index(cache: Path, tree: Path, check: bool) -> tuple[dict, BinaryIO] | None:
    """(index, the file open at the symbols line) of a cache file, current unless not ``check``ed; else None."""
    try:
        fh = cache.open("rb")
    except OSError:
        return None
    try:
        index = json.loads(fh.readline())
        if isinstance(index["kinds"], dict) and isinstance(index["key"], list) and (not check or _current(tree, index)):
            return index, fh
    except (OSError, ValueError, KeyError, TypeError):
        pass
    fh.close()
    return None


def _ident(tree: Path, arch: str) -> tuple[str, Path]:
    ident = hashlib.sha256(json.dumps([str(tree), kconfig_env(arch), _FORMAT], sort_keys=True).encode()).hexdigest()[:16]
    return ident, cache_root() / f"kconfig-scan-{ident}.json"


def cache_file(tree: Path, arch: str) -> Path:
    """Where the scan of ``tree`` (resolved) for ``arch`` is kept."""
    return _ident(tree, arch)[1]


def cached(tree: Path, arch: str, trust: bool = False) -> Cached:
    """``scan()`` of the tree, kept in process and on disk until a Kconfig file changes.

    ``trust``: the disk cache's index is used before its files are checked; the check runs
    with the prefetch (while conf runs) and ``Cached.fresh()`` tells its outcome."""
    env = kconfig_env(arch)
    ident, cache = _ident(tree, arch)
    hit = _MEM.get(ident)
    if hit is not None and input_stamp.files_key(tree, hit[0].files) == hit[1]:
        kept = hit[0]
        return Cached(_kinds(kept), hit[1], lambda: kept)
    opened = _index(cache, tree, check=not trust)
    if opened is not None:
        index, fh = opened
        key = [tuple(x) for x in index["key"]]

        def load() -> Source:
            try:
                with fh:
                    src = Source(_syms_from(json.loads(fh.read())), index["files"])
            except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError):
                src = scan(tree, env)   # a damaged second line: read the tree again
            _MEM[ident] = (src, key)
            return src
        def check() -> bool:
            if _current(tree, index):
                return True
            fh.close()
            return False
        return Cached(_Kinds(index["kinds"]), key, load, check if trust else None)
    src = scan(tree, env)
    key = input_stamp.files_key(tree, src.files)
    kinds: Mapping[str, Kind] = _kinds(src)
    try:
        write_atomic(cache, json.dumps({"files": src.files, "key": key,
                                        "kinds": {n: [k.type, True, k.where] if k.transitional else [k.type]
                                                  for n, k in kinds.items()}})
                     + "\n" + json.dumps(_syms_json(src.syms)))
    except (OSError, LfspassError):
        pass  # only speed is lost
    _MEM[ident] = (src, key)
    return Cached(kinds, key, lambda: src)


def scan_cached(tree: Path, arch: str) -> Source:
    """The full ``scan()`` of the tree, from the cache where it is current (see :func:`cached`)."""
    return cached(tree, arch).source()
