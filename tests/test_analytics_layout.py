"""The analytics package's layout rules: imports point one way, the COMPLETE-days CTE written once.

Plain source checks (no store): every `engine.analytics` import is at module level (none inside a
function to dodge a circle), the import graph between the package's modules has no cycle, and the
only place the COMPLETE-days selection is spelled out is engine/analytics/templating.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "engine" / "analytics"
MODULES = sorted(p for p in PKG.glob("*.py") if p.name != "__init__.py")


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every engine.analytics import of a module."""
    out: list[tuple[str, bool]] = []
    top = set(map(id, tree.body))  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "engine.analytics":
                names = [f"engine.analytics.{a.name}" for a in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            if n.startswith("engine.analytics."):
                out.append((n.split(".")[2], id(node) in top))
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_analytics_imports_are_at_module_level(path: Path) -> None:
    inner = [m for m, at_top in _imports(ast.parse(path.read_text())) if not at_top]
    assert not inner, f"{path.name} imports {inner} inside a function"


def test_analytics_import_graph_has_no_cycle() -> None:
    graph = {
        p.stem: {m for m, _ in _imports(ast.parse(p.read_text())) if m != p.stem} for p in MODULES
    }
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, "import cycle: " + " -> ".join([*path, node])
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
    assert graph["gates"] >= {"build", "templating"} and "rebuild" not in graph["gates"]


def test_complete_days_selection_is_written_once() -> None:
    needle = "status = 'COMPLETE'"
    files = [*PKG.glob("*.py"), *PKG.glob("sql/*.sql")]
    holders = sorted(p.name for p in files if needle in p.read_text())
    assert holders == ["templating.py"]
    users = [p.name for p in files if "{complete_days_cte}" in p.read_text()]
    assert {"gates.sql", "rebuild.sql", "build.py", "snapshot.py"} <= set(users)
