"""Which packages the wheel holds: every package below lfspass/, and plugins/ as lfspass_plugins.

Everything else about the build is in pyproject.toml.  Package discovery lives here because
pyproject's ``[tool.setuptools.packages.find]`` names a package after its folder, so it cannot
install the built-ins' source folder ``plugins/`` under the name ``lfspass_plugins``, and
setuptools lets a ``packages`` list here be replaced by one there, not extended.
"""
from __future__ import annotations

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["lfspass", "lfspass.*"]),
              "lfspass_plugins", *(f"lfspass_plugins.{name}" for name in find_packages("plugins"))],
    package_dir={"lfspass_plugins": "plugins"},
)
