"""Run ``python -m lfspass``."""
import sys

from .cli import main

sys.exit(main())
