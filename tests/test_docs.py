"""The docs hold together: a short README that links every page, links and anchors that resolve,
the exit-code table equal to the code's error families, and no citation of a file outside the repository."""
from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from lfspass import errors

README = REPO / "README.md"
DOCS = REPO / "docs"
EXIT_CODES = DOCS / "reference" / "exit-codes.md"
README_LIMIT = 10 * 1024

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*") if p.is_file())


def markdown_files() -> list[Path]:
    return [README, *(p for p in pages() if p.suffix == ".md")]


def prose(text: str) -> str:
    """The text without fenced code blocks, where a `[x](y)` or `# x` is no link or heading."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)            # code spans keep their text
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    return LINK.findall(INLINE_CODE.sub("", prose(path.read_text())))


def relative_links(path: Path) -> list[tuple[str, Path, str]]:
    """(link as written, file it names, anchor or '') for each link that stays in the repository."""
    out = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        out.append((target, (path.parent / file).resolve() if file else path.resolve(), anchor))
    return out


def test_slug_is_githubs() -> None:
    assert slug("Booting through real GRUB under OVMF") == "booting-through-real-grub-under-ovmf"
    assert slug("BAR sizes from `resource`") == "bar-sizes-from-resource"
    assert slug("Why /etc/modules does nothing") == "why-etcmodules-does-nothing"
    assert slug("kconfig: the (newest) tree's Kconfig_v2") == "kconfig-the-newest-trees-kconfig_v2"


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT})"


def test_readme_keeps_the_two_commands() -> None:
    """The set-up commands CI and the install notes quote, word for word."""
    text = README.read_text()
    assert "bash .ci/install && .venv/bin/doit " in text
    assert "bash .ci/install && .venv/bin/python -m pytest " in text


def test_readme_links_every_page() -> None:
    assert pages(), "docs/ is empty"
    linked = {file for _, file, _ in relative_links(README)}
    missing = [str(p.relative_to(REPO)) for p in pages() if p.resolve() not in linked]
    assert not missing, "pages under docs/ the README does not link: " + ", ".join(missing)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path: Path) -> None:
    bad = []
    for target, file, anchor in relative_links(path):
        if not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            bad.append(f"{target}: no heading with anchor #{anchor} in {file.relative_to(REPO)}")
    assert not bad, f"{path.relative_to(REPO)}: " + "; ".join(bad)


def exit_code_table() -> dict[str, tuple[int, set[str]]]:
    """family -> (exit code, stage classes) from the page's family table."""
    rows: dict[str, tuple[int, set[str]]] = {}
    for line in EXIT_CODES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit() and re.fullmatch(r"`\w+`", cells[1]):
            rows[cells[1].strip("`")] = (int(cells[0]), set(re.findall(r"`(\w+)`", cells[3])))
    return rows


def test_exit_code_table_lists_the_code_families() -> None:
    families = {cls.__name__: cls.exit_code for cls in errors.LfspassError.__subclasses__()}
    table = exit_code_table()
    assert {name: code for name, (code, _) in table.items()} == families, \
        f"{EXIT_CODES.relative_to(REPO)} must list exactly the families in lfspass/errors.py with their exit codes"


def test_exit_code_table_puts_every_stage_error_under_its_family() -> None:
    table = exit_code_table()
    families = {cls.__name__: cls for cls in errors.LfspassError.__subclasses__()}
    stage = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
             if issubclass(cls, errors.LfspassError) and cls.__module__ == errors.__name__
             and cls is not errors.LfspassError and cls.__name__ not in families]
    for cls in stage:
        family = next(name for name, fam in families.items() if issubclass(cls, fam))
        assert cls.__name__ in table[family][1], f"{cls.__name__} ({family}) missing from its row in {EXIT_CODES.name}"
    named = {name for _, classes in table.values() for name in classes}
    assert named == {cls.__name__ for cls in stage}, f"{EXIT_CODES.name} names classes errors.py lacks"


def repository_files() -> list[Path]:
    """Every file git would commit (tracked, or new and not ignored)."""
    proc = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    return [REPO / name for name in proc.stdout.split("\0") if name and (REPO / name).is_file()]


def test_no_file_cites_the_field_notes() -> None:
    """Background lives in docs/explanation/; nothing may point at notes outside the repository."""
    word = "FIELD" + "-NOTES"  # spelled in two parts so this file does not cite them itself
    here = Path(__file__).resolve()
    hits = [f"{p.relative_to(REPO)}:{n}" for p in repository_files() if p.resolve() != here
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if word in line]
    assert not hits, f"{len(hits)} lines cite {word} (point them at docs/explanation/): " + ", ".join(hits)


DOC_CITE = re.compile(r"\bdocs/[\w./-]+\.md(?:#[\w-]+)?")


def test_docs_cited_by_the_code_exist() -> None:
    """A comment citing ``docs/<page>.md#<anchor>`` names a page that is there and a heading on it."""
    broken = []
    for p in repository_files():
        if p.suffix not in (".py", ".toml", ".sh", ".j2", ".cfg") or p.is_relative_to(DOCS):
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for cite in DOC_CITE.findall(line):
                page, _, anchor = cite.partition("#")
                if not (REPO / page).is_file() or (anchor and anchor not in anchors(REPO / page)):
                    broken.append(f"{p.relative_to(REPO)}:{n}: {cite}")
    assert not broken, "comments cite docs that are not there: " + ", ".join(broken)
