"""Every example config in examples/ validates (it is what users copy first)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from autoplat.core.al_study import load_al_config
from autoplat.core.config import load_config
from autoplat.core.curation import load_curate_config
from autoplat.core.registry import get_registry

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_there_are_examples_of_each_command() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {
        "quickstart",
        "al_digits",
        "nas_table",
        "nas_oneshot",
        "nas_digits",
        "clip_shapes",
        "video_text",
        "dino_digits",
        "curate_alt_texts",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_validates(path: Path) -> None:
    raw = tomllib.loads(path.read_text())
    load = load_al_config if "al" in raw else load_curate_config if "input" in raw else load_config
    resolved = load(path, get_registry())
    assert resolved.config.study.name
