"""Every example config in examples/ validates (it is what users copy first)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from autoplat.core.al_study import load_al_config
from autoplat.core.config import load_config
from autoplat.core.registry import get_registry

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_there_are_examples_of_each_command() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {"quickstart", "al_digits", "nas_table", "nas_oneshot", "nas_digits"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_validates(path: Path) -> None:
    is_al = "al" in tomllib.loads(path.read_text())
    resolved = (load_al_config if is_al else load_config)(path, get_registry())
    assert resolved.config.study.name
