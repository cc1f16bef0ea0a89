"""The words of a refusal: one text per reason, used by both explainers.

explain_kconfiglib.py (kconfiglib's view of the tree) and explain_lines.py (the symbol's own
Kconfig lines, for trees kconfiglib cannot read) find the reason; the sentence is made here,
so a refusal reads the same whichever of them explained it.
"""
from __future__ import annotations

import re

# Switches no fix should flip: they open foreign or unfinished code (52 foreign-SoC drivers
# follow COMPILE_TEST on x86), and a kernel developer never turns them on to satisfy a dependency.
NEVER = frozenset({"COMPILE_TEST", "EXPERT", "BROKEN", "STAGING"})

# Prompts of options no advice or resolve turns on to satisfy another symbol (unless the request
# itself is one): tests, self-tests, debugging aids, and lfspass's own transitional marker.
TESTING = re.compile(r"\btest(s|ing)?\b|debug|\btransitional \(lfspass\)", re.I)

# Reasons, the words after "refused (got X): ".
DEPENDS = "depends on"
OFFERED_IF = "is offered only if"
CHOICE_DEPENDS = "sits in a choice that depends on"
NO_PROMPT = "has no prompt (set only by select or default)"
LIMITED = "is limited by its dependencies"


def head(name: str, asked: str, source: str, got: str) -> str:
    """``SYM=asked (from source) refused (got X)``: how every refusal starts."""
    return f"{name}={asked} (from {source}) refused (got {got or 'nothing'})"


def other_member(chosen: str | None) -> str:
    """The reason for a choice member that lost to another (named when known)."""
    return f"shares a choice with {chosen or 'another member'}, which is chosen (ask for only one)"


def blocked(first: str, reason: str, terms: list[str], where: str) -> str:
    """``<head>: <reason> <term && term> (where)``; each term may carry its own values and place."""
    return f"{first}: {reason} {' && '.join(terms)}".rstrip() + (f" ({where})" if where else "")


def only_never(names: list[str]) -> str:
    """Why a request needs a switch from NEVER: the words both explainers use."""
    return f"only {', '.join(names)} would allow it here (not for a kernel meant to run)"


def with_advice(text: str, lines: list[tuple[str, str]], why_not: str, arch: str, hint: str | None) -> str:
    """Append the advice: the ``SYMBOL=value`` lines to add (dependencies first), or why the
    request cannot hold on ``arch``."""
    if why_not:
        return text + f"; it cannot hold on {arch}: {why_not}"
    if lines:
        return text + "; add " + ", ".join(f"{n}={v}" for n, v in lines) + (f" or use {hint}" if hint else "")
    return text + (f"; use {hint} or set those symbols" if hint else "")


def selected(first: str, terms: list[str], where: str, names: list[str]) -> str:
    return f"{first}: selected by {' || '.join(terms)} ({where}); turn off {', '.join(names)} first"


def chosen_member(first: str, where: str) -> str:
    return f"{first}: is the chosen member of its choice ({where}); ask for another member =y instead"


def modules_off(first: str, where: str, hint: str | None) -> str:
    return f"{first}: MODULES=n turns m into y ({where}); set MODULES=y" + (f" or use {hint}" if hint else "")


def default_wins(first: str, where: str) -> str:
    return f"{first}: its default or an implying symbol wins ({where})"


def out_of_range(first: str, ranges: list[str], where: str) -> str:
    """``ranges`` as ``lo..hi``, the ones in force."""
    return f"{first}: outside the allowed range {', '.join(ranges)} ({where})"


def form_hint(kind: str, value: str) -> str:
    """What to write instead of a number conf refused as malformed."""
    if kind == "int":
        fix = f"; write {int(value)}" if re.fullmatch(r"-?[0-9]+", value) else ""
        return f"an int symbol takes a decimal number without leading zeros{fix}"
    if kind == "hex":
        return "a hex symbol takes a hex number like 0x1f"
    return ""


def conf_refused(name: str, asked: str, source: str, words: str, kind: str) -> str:
    """A value conf itself rejected (its warning ``words``), with what to write instead."""
    fix = form_hint(kind, asked)
    return (f"{name}={asked} (from {source}) refused: the kernel's conf says \"{words}\""
            + (f"; {fix}" if fix else ""))


def with_conf_words(text: str, said: list[str]) -> str:
    """What conf warned about the symbol, after the explanation."""
    return text + (f" [the kernel's conf: {'; '.join(said)}]" if said else "")


RESOLVE_FOUND_NOTHING = ("; resolve found no safe change (it never turns a symbol off, nor on "
                         "COMPILE_TEST, EXPERT or a test option)")
