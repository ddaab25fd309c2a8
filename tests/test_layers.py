"""The import rules of docs/architecture.md: layers import only downward (face -> plugins
and strategies -> core), strategies use no concrete plugin, and no modules import each
other in a loop at import time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "autoplat"
FACE = ("autoplat.cli", "autoplat.commands", "autoplat.views", "autoplat.tui", "autoplat.api")
PLUGINS = ("autoplat.plugins", "autoplat.search_spaces")
STRATEGIES = ("autoplat.strategies",)
TESTING = ("autoplat.testing",)  # helpers for plugin authors' tests: above core, beside face

RULES = [  # (modules, what they must not import, why)
    (
        ("autoplat.core",),
        FACE + PLUGINS + STRATEGIES + TESTING,
        "core is what the rest is built on",
    ),
    (PLUGINS, FACE + STRATEGIES + TESTING, "plugins build on core only"),
    (STRATEGIES, FACE + PLUGINS + TESTING, "a strategy works with any plugin, through core"),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module(p): p for p in sorted(PACKAGE.rglob("*.py")) if "templates" not in p.parts}


def _imports(path: Path, module_level: bool) -> set[str]:
    """Modules ``path`` imports (``from a import b`` counts a.b when that is a module);
    with ``module_level``, only what runs at import time (not in functions, not
    ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = _top_level(tree.body) if module_level else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    found += _top_level(getattr(child, "body", [child]))
        else:
            found.append(node)
    return found


@pytest.mark.parametrize("layer, forbidden, why", RULES, ids=[r[0][0] for r in RULES])
def test_layers_import_only_downward(layer, forbidden, why) -> None:
    breaches = [
        f"{name} imports {imported}"
        for name, path in _sources().items()
        if name.startswith(layer)
        for imported in sorted(_imports(path, module_level=False))
        if imported.startswith(forbidden)
    ]
    assert breaches == [], why


def test_no_import_cycles_at_import_time() -> None:
    """A light module may import its heavy implementation inside a function (lazy
    registration); what runs at import time has no loops."""
    sources = _sources()
    graph = {
        name: {m for m in _imports(path, module_level=True) if m in sources and m != name}
        for name, path in sources.items()
    }
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_the_cli_imports_no_command_tui_or_plugin() -> None:
    """`platform` builds its parser from registered commands: cli.py depends on none."""
    imported = _imports(PACKAGE / "cli.py", module_level=False)
    assert not [m for m in imported if m.startswith((*FACE[1:], *PLUGINS, *STRATEGIES))]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components
