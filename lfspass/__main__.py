"""Run ``python -m lfspass``."""
from lfspass.cli.main import run

run()
