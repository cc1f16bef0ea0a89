"""``lfspass fetch``: download one file and verify it (sha256, or signed SHA256SUMS)."""
from __future__ import annotations

import argparse
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
    parser.add_argument("-o", "--output", metavar="DEST", type=Path,
                        help="where to put the file (default: the URL's file name here)")
    parser.add_argument("--cache", metavar="DIR", type=Path,
                        help="content-addressed cache (default: $LFSPASS_CACHE or ~/.cache/lfspass)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.epilog = ("Timeouts and retries: LFSPASS_TIMEOUT=SECONDS or CONNECT,READ (default 15,60), "
                     "LFSPASS_RETRIES=N (default 4). An interrupted download resumes from DEST.part.")


def run(args: argparse.Namespace) -> int:
    from lfspass.fetch.download import fetch, url_name  # requests loads only when a fetch runs

    dest = args.output or Path(url_name(args.url) or "download")
    result = fetch(
        args.url, dest, sha256=args.sha256, sums_url=args.sums, signature_url=args.signature,
        keyring=args.keyring, fingerprint=args.fingerprint, cache_dir=args.cache,
        progress=False if args.no_progress else None,
    )
    if args.json:
        print_json(asdict(result))
    else:
        how = "from cache" if result.from_cache else (
            f"{result.downloaded_bytes} bytes fetched" + (", resumed" if result.resumed else ""))
        print(f"{result.path}: sha256 {result.sha256} ok ({how})")
    return 0
