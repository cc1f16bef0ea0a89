"""``lfspass fetch``: download one file and verify it (sha256, or signed SHA256SUMS)."""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

from lfspass.cli.output import print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="http(s):// URL, file:// URL or local path")
    parser.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file")
    parser.add_argument("--sums", metavar="URL", help="signed SHA256SUMS list that names the file")
    parser.add_argument("--signature", metavar="URL",
                        help="detached signature of --sums (default: the --sums URL + '.sign')")
    parser.add_argument("--keyring", metavar="FILE", type=Path,
                        help="keyring for gpgv (default: Debian CD signing key from debian-keyring)")
    parser.add_argument("--fingerprint", metavar="FPR", help="require the signature to be by this key")
    parser.add_argument("-o", "--output", metavar="DEST",
                        help="where to put the file (default: the URL's file name here)")
    parser.add_argument("--cache", metavar="DIR",
                        help="content-addressed cache (default: $LFSPASS_CACHE or ~/.cache/lfspass)")
    parser.add_argument("--max-size", metavar="SIZE",
                        help="the most bytes the file may have (e.g. 64M, 8G; default $LFSPASS_MAX_SIZE, else 16G): "
                             "a larger announced size is refused before anything is written, a longer body is "
                             "cut and its DEST.part removed")
    parser.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.epilog = ("Timeouts and retries: LFSPASS_TIMEOUT=SECONDS or CONNECT,READ (default 15,60), "
                     "LFSPASS_RETRIES=N (default 4; every failed try counts, with backoff). Free space: a download "
                     "stops (and removes DEST.part) before DEST's filesystem has less than 1 GiB or 5 % of its "
                     "size free, whichever is smaller. An interrupted download (SIGINT, SIGTERM, a cut) keeps "
                     "DEST.part when the server can resume it: run the same command again.")


def run(args: argparse.Namespace) -> int:
    from lfspass.errors import FetchRequestError
    from lfspass.fetch.download import fetch_item, safe_name  # requests loads only when a fetch runs
    from lfspass.fetch.item import Download

    if args.output is not None and not str(args.output).strip():
        raise FetchRequestError("-o '': give a file name, or leave -o out to use the URL's")
    # Without -o the URL's last segment, made one plain name: %2F must not lead out of this folder.
    dest = Path(args.output) if args.output is not None else Path(safe_name(args.url))
    if args.cache is not None and (not args.cache.strip() or (Path(args.cache).exists() and not Path(args.cache).is_dir())):
        raise FetchRequestError(f"--cache {args.cache!r}: give a folder for the cache (or leave --cache out)")
    if any(len(os.fsencode(part)) > 255 for part in dest.parts):
        raise FetchRequestError(f"-o {str(dest)[:40]}...: a file name longer than 255 bytes; choose a shorter one")
    if args.keyring is not None and not Path(args.keyring).is_file():
        raise FetchRequestError(f"--keyring {args.keyring}: no such file; give a gpg keyring file")
    item = Download(args.url, dest, sha256=args.sha256, sums_url=args.sums, signature_url=args.signature,
                    keyring=args.keyring, fingerprint=args.fingerprint, max_size=args.max_size)
    result = fetch_item(item, cache_dir=Path(args.cache) if args.cache else None,
                        progress=False if args.no_progress else None)
    if args.json:
        print_json(asdict(result))
    else:
        how = "from cache" if result.from_cache else (
            f"{result.downloaded_bytes} bytes fetched" + (", resumed" if result.resumed else ""))
        print(f"{result.path}: sha256 {result.sha256} ok ({how})")
    return 0
