"""Run ``python -m lfspass``."""
import sys

from lfspass.cli.main import main

sys.exit(main())
