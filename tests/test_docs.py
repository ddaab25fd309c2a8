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
