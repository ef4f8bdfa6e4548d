"""The test suite's own rules: what tests share lives in support modules (support.py and its
neighbours), never in another test module, and cdr rows are built in one place."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_test_module_imports_another():
    """A helper a second module needs moves to support.py: a test module imported by another
    runs its module-level code twice and ties the two together."""
    found = {path.name: sorted(name for name in _imported_modules(path)
                               if name.startswith("test_"))
             for path in TESTS.glob("test_*.py")}
    assert {name: modules for name, modules in found.items() if modules} == {}


def test_legs_are_built_by_support_alone():
    """One `leg()` (support.py): a Leg spelled out column by column elsewhere is a second
    builder whose defaults drift from the first."""
    builders = []
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Leg" \
                    and len(node.keywords) > 3:
                builders.append(f"{path.name}:{node.lineno}")
    assert builders == []
