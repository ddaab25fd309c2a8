"""docs/plugins.md documents every hookspec with its exact signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from autoplat.core import hookspecs

DOC = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()


def test_every_hookspec_is_documented_with_its_signature():
    specs = {
        name: fn
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, "autoplat_spec")
    }
    assert len(specs) == 12
    documented = dict(re.findall(r"^### `(\w+)\(([^)]*)\)`", DOC, re.M))
    for name, fn in specs.items():
        params = ", ".join(inspect.signature(fn).parameters)
        assert documented.get(name) == params, f"{name}({params}) is not in docs/plugins.md"
        assert fn.__doc__, f"hookspec {name} has no docstring"
    assert set(documented) == set(specs), "docs/plugins.md lists a hook that does not exist"


def test_architecture_doc_names_every_core_and_face_module():
    """docs/architecture.md is the reference: a module added without a line there fails."""
    root = Path(__file__).parents[1]
    doc = (root / "docs" / "architecture.md").read_text()
    readme = (root / "README.md").read_text()
    assert "docs/architecture.md" in readme
    modules = [p for p in (root / "autoplat" / "core").glob("*.py") if p.stem != "__init__"]
    modules += [p for p in (root / "autoplat" / "commands").glob("*.py") if p.stem != "__init__"]
    missing = [str(p.relative_to(root)) for p in modules if f"{p.stem}.py" not in doc]
    assert missing == []
