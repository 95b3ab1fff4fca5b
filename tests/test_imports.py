"""The shape of the package, read from its source: no import cycles, no private names borrowed
across packages (``ctfp.a`` may not import ``_x`` from ``ctfp.b``), no engine in the runner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ctfp"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def package_of(module: str) -> str:
    """``ctfp.membership.base`` -> ``ctfp.membership``; a package is its own package."""
    if (ROOT.parent / Path(*module.split(".")) / "__init__.py").is_file():
        return module
    return module.rpartition(".")[0]


def _skipped(node: ast.AST, parents: dict[ast.AST, ast.AST], eager: bool) -> bool:
    """Inside ``if TYPE_CHECKING:`` (never runs), or inside a function when only the imports
    that run at import time are wanted."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
        if eager and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return True
    return False


def imports(module: str, eager: bool = False) -> list[tuple[str, list[str]]]:
    """(imported ctfp module, names taken from it) for every import in ``module``, including
    imports inside functions (they run too; ``eager``: only those that run at import time),
    excluding ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(MODULES[module].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if _skipped(node, parents, eager):
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("ctfp")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("ctfp"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:  # `from ctfp.x import module`
                    found.append((sub, []))
                else:
                    found.append((node.module, [alias.name]))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the ctfp modules its imports run: each imported module and, from outside a
    package, what the package's ``__init__`` imports at import time (Python runs it first)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in imports(module):
            if target not in MODULES:
                continue
            edges[module].add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):
                ancestor = ".".join(parts[:i])
                if ancestor in MODULES and not module.startswith(ancestor + "."):
                    edges[module] |= {t for t, _ in imports(ancestor, eager=True) if t in MODULES}
    for module in edges:
        edges[module].discard(module)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_source_is_found() -> None:
    assert {"ctfp.cli", "ctfp.membership.base", "ctfp.embed.runner", "ctfp.runs.task1"} <= set(
        MODULES
    )
    assert ("ctfp.membership.base", ["MembershipMethod"]) in imports("ctfp.membership.centroid")


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_borrowed_from_another_package(module: str) -> None:
    for target, names in imports(module):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if target.split(".")[-1].startswith("_") and package_of(target) == "ctfp":
            continue  # ctfp._arrays, ctfp._version: the root package's own plumbing
        private_module = target.split(".")[-1].startswith("_") and target in MODULES
        if (private or private_module) and package_of(target) != package_of(module):
            pytest.fail(f"{module} imports {private or target} from {target}, another package")


def test_the_runner_and_the_reading_side_do_not_import_engines() -> None:
    for module in MODULES:
        if module.startswith(("ctfp.embed", "ctfp.store", "ctfp.io")):
            targets = {t for t, _ in imports(module)}
            assert not any(
                t.startswith("ctfp.engine.") for t in targets if t != "ctfp.engine.settings"
            ), module
            source = MODULES[module].read_text()
            assert "import ray" not in source, module
        if module.startswith("ctfp.store"):
            assert not any(t.startswith("ctfp.embed") for t, _ in imports(module)), module
