"""The kernel stage's Kconfig engine: a .config written by the kernel's own conf, every request checked.

configure.py drives it; conf_runner.py and conf_source.py run and find conf; request_check.py and
symbols.py read requests and Kconfig lines; the kconfiglib_* and explain_* modules explain refusals.
"""
