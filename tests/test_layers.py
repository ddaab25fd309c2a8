"""Layers import only downward: nothing under autoplat/core imports a plugin, the CLI or
the TUI (core is what they are built on)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).parents[1] / "autoplat" / "core"
ABOVE_CORE = ("autoplat.plugins", "autoplat.cli", "autoplat.tui", "autoplat.strategies")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_core_imports_nothing_above_it() -> None:
    breaches = [
        f"{path.relative_to(CORE.parents[1])}: {name}"
        for path in sorted(CORE.rglob("*.py"))
        for name in _imports(path)
        if name.startswith(ABOVE_CORE)
    ]
    assert breaches == []
