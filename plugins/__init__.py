"""lfspass's built-in GPU plugins, installed as the package ``lfspass_plugins``.

Each module here registers through the ``lfspass`` entry-point group in pyproject.toml,
exactly as a third-party plugin does, and imports nothing from lfspass but ``lfspass.api``.
Copy one of them to start your own plugin.
"""
