"""The kernel stage's Kconfig engine: a .config written by the kernel's own conf, every request checked.

configure.py drives it (result.py: what it decided); conf_runner.py runs conf, conf_source.py finds its
sources; request_check.py and symbols.py read requests and Kconfig lines; a refusal is explained by
explain_kconfiglib.py (through kconfiglib_adapter.py) or explain_lines.py, in refusal_text.py's words.
"""
