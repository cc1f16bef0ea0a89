"""The package's shape: one subpackage per stage, imports that follow the README's rule, no cycles."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "lfspass"
STAGES = ("host", "doctor", "kernel", "boot", "vm", "fetch", "lab", "fleet", "cli")
# The README's import rule as layers: a module may import its own stage and any lower layer.
LAYER = {"spine": 0, "host": 1, "fetch": 1, "kernel": 2, "boot": 2, "doctor": 2, "vm": 2,
         "lab": 3, "fleet": 3, "api": 4, "graph": 4, "cli": 5}
SIDEWAYS = {("boot", "doctor")}  # `lfspass boot confirm` judges the booted host with doctor's checks


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    if len(parts) > 1 and parts[1] in ("api", "graph"):
        return parts[1]
    if module == "lfspass.__main__":  # `python -m lfspass` is the command line's other door
        return "cli"
    return "spine"


def _target(name: str) -> str:
    """The lfspass module an import statement names (a package's submodule when it is one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(path: Path) -> set[str]:
    """Every lfspass module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name == "lfspass" or name.startswith("lfspass."):
                target = _target(name)
                if target:
                    found.add(target)
    return found


GRAPH = {mod: imports_of(path) - {mod} for mod, path in MODULES.items()}


def test_every_stage_is_a_subpackage_with_a_docstring_saying_what_it_may_import() -> None:
    for stage in STAGES:
        init = PKG / stage / "__init__.py"
        assert init.exists(), f"lfspass/{stage}/ is not a subpackage"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "Imports" in doc and 2 <= len(doc.strip().splitlines()) <= 6, f"{init}: say what the stage does and may import"
    top = [p.name for p in PKG.glob("*.py")]
    # 17: diskspace.py joined the spine, because fetch, kernel, vm and lab all keep its free-space reserve.
    assert len(top) <= 17, f"the top level should keep only the spine: {sorted(top)}"


@pytest.mark.parametrize("stage", STAGES + ("api", "graph"))
def test_each_subpackage_imports_alone(stage: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import lfspass.{stage}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in graph.items():
        src = _stage(mod)
        for target in targets:
            dst = _stage(target)
            if src == dst or LAYER[dst] < LAYER[src] or (src, dst) in SIDEWAYS:
                continue
            bad.append(f"{mod} ({src}) imports {target} ({dst})")
    return sorted(bad)


def test_imports_follow_the_layer_rule() -> None:
    bad = violations(GRAPH)
    assert not bad, "imports against the README's rule:\n" + "\n".join(bad)


def test_nothing_imports_the_cli_or_the_doit_glue() -> None:
    bad = [f"{m} imports {t}" for m, ts in GRAPH.items() for t in ts
           if _stage(t) in ("cli", "graph") and _stage(m) not in (_stage(t), "cli")]
    assert not bad, bad


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp = []
            while True:
                top = stack.pop()
                comp.append(top)
                if top == node:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    found = cycles_in(GRAPH)
    assert not found, f"import cycles (imports inside functions count): {found}"
    # and the finder is live: recipe <-> schema, the pair this layout broke up, is one
    assert cycles_in({"a.recipe": {"a.schema"}, "a.schema": {"a.errors", "a.recipe"}, "a.errors": set()}) == [
        ["a.recipe", "a.schema"]]


def test_plugins_import_only_the_public_api() -> None:
    for path in sorted((REPO / "plugins").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lfspass"):
                assert node.module in ("lfspass", "lfspass.api"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("lfspass.") and a.name != "lfspass.api" for a in node.names), path.name


def test_package_modules_stay_small() -> None:
    big = {str(p.relative_to(REPO)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 320}
    assert not big, f"split these into modules named for their job: {big}"


def test_the_rule_catches_a_sideways_import(tmp_path: Path) -> None:
    """The checker is live: a function-level import across stages, or upward, is reported."""
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from lfspass.kernel.build import make_env\n")
    assert imports_of(fake) == {"lfspass.kernel.build"}
    assert violations({"lfspass.vm.x": imports_of(fake)}) == [
        "lfspass.vm.x (vm) imports lfspass.kernel.build (kernel)"]
    assert violations({"lfspass.plan": {"lfspass.lab.tasks"}, "lfspass.lab.tasks": {"lfspass.plan"}}) == [
        "lfspass.plan (spine) imports lfspass.lab.tasks (lab)"]
