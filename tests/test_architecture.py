"""The shape of the code: no import circles, a Kedro-free library, small modules, and no
benchmark or notebook reaching into a node module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every ``wemem`` module imported anywhere in the file (lazy imports included; imports under
    ``if TYPE_CHECKING`` excluded)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "wemem"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "wemem":
                continue
            subs = {f"{module}.{a.name}" for a in node.names}
            if not subs <= modules:  # `from pkg import submodule` depends on the submodule only
                out.add(module)
            out |= subs & modules
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path, name, set(files)) if m in files and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, or None. A package importing its own submodules (re-exports) and a
    submodule importing a sibling are edges like any other; a submodule importing its parent
    package's ``__init__`` would close a circle, so it counts too."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_circle():
    graph = _graph()
    # a package's __init__ re-exporting its submodules is how Python packages work; a submodule
    # that imports names from its own package __init__ back is the circle we forbid
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_never_imports_kedro():
    offenders = []
    for path in (SRC / "wemem" / "ml").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("kedro", "kedro_datasets")
                          or n.startswith("wemem.pipelines") or n in ("wemem.hooks", "wemem.structure", "wemem.params")]
    assert not offenders, offenders


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in SRC.rglob("*.py")))
def test_no_module_is_longer_than_the_limit(path):
    lines = len((ROOT / path).read_text().splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines (limit {MAX_LINES}): split it by job"


def test_benchmarks_and_notebooks_call_the_library_not_nodes():
    offenders = []
    for path in [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "notebooks").rglob("*.ipynb")]:
        text = path.read_text()
        if "wemem.pipelines" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
