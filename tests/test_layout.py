"""The engine's layout rules, checked on the source: sub-packages depend one way.

- `engine.rpc`, `engine.store` and `engine.analytics` never import the orchestration modules
  (cli, config at run time, runtime, supervisor, worker, control, protocol): those sit above them.
- Between sub-packages: rpc imports neither store nor analytics; store imports neither rpc nor
  analytics; analytics may use store, never rpc.
- The shared leaf modules (status, masking, constants, decode) import no orchestration module.
- No sub-package module imports an engine module inside a function (no circle dodged that way).
Imports under `if TYPE_CHECKING:` are types only and allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"
ORCHESTRATION = {"cli", "config", "runtime", "supervisor", "worker", "control", "protocol"}
FORBIDDEN = {
    "rpc": ORCHESTRATION | {"store", "analytics"},
    "store": ORCHESTRATION | {"rpc", "analytics"},
    "analytics": ORCHESTRATION | {"rpc"},
}
LEAVES = ["status.py", "masking.py", "constants.py", "decode.py"]


def engine_imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(second component of each engine.* import, at module level) outside TYPE_CHECKING."""
    type_only: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for n in ast.walk(node))
    top = {id(n) for n in tree.body}
    out: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "engine":
                names = [f"engine.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "engine" and len(parts) > 1:
                out.append((parts[1], id(node) in top))
    return out


SUBPACKAGE_MODULES = [
    (pkg, p) for pkg in sorted(FORBIDDEN) for p in sorted((ENGINE / pkg).glob("*.py"))
]


@pytest.mark.parametrize(
    "pkg, path", SUBPACKAGE_MODULES, ids=[f"{k}/{p.name}" for k, p in SUBPACKAGE_MODULES]
)
def test_subpackages_depend_one_way(pkg: str, path: Path) -> None:
    imports = engine_imports(ast.parse(path.read_text()))
    bad = sorted({m for m, _ in imports if m in FORBIDDEN[pkg]})
    assert not bad, f"engine/{pkg}/{path.name} imports engine.{bad}"
    inner = sorted({m for m, top in imports if not top})
    assert not inner, f"engine/{pkg}/{path.name} imports engine.{inner} inside a function"


@pytest.mark.parametrize("name", LEAVES)
def test_leaf_modules_import_no_orchestration(name: str) -> None:
    imports = engine_imports(ast.parse((ENGINE / name).read_text()))
    bad = sorted({m for m, _ in imports if m in ORCHESTRATION | set(FORBIDDEN)})
    assert not bad, f"engine/{name} imports engine.{bad}"


def test_the_checker_sees_forbidden_imports() -> None:
    src = (
        "from typing import TYPE_CHECKING\n"
        "from engine.runtime import Engine\n"
        "if TYPE_CHECKING:\n    from engine.config import Config\n"
        "def f():\n    from engine import supervisor\n"
    )
    assert engine_imports(ast.parse(src)) == [("runtime", True), ("supervisor", False)]
