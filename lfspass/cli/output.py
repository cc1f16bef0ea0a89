"""Output helpers every command shares: the ``--json`` form."""
from __future__ import annotations

import json
import sys


def print_json(obj: object) -> None:
    """Print ``obj`` as indented JSON on stdout (the ``--json`` form of every command)."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
