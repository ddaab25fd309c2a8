"""The plugin module named by the entry point: one hook per kind of thing it adds."""

from __future__ import annotations

from pathlib import Path

from autoplat import hookimpl
from autoplat.core.hookspecs import Register
from autoplat.core.space import NamedSpace

from autoplat_example.hill_climb import HillClimb
from autoplat_example.margin import Margin
from autoplat_example.mlp import MLP
from autoplat_example.shapes import Shapes
from autoplat_example.word_count import WordCount


@hookimpl
def register_architectures(register: Register) -> None:
    """Register the MLP."""
    register(MLP())


@hookimpl
def register_search_spaces(register: Register) -> None:
    """Register the MLP's default space (space.toml next to this file)."""
    register(NamedSpace(MLP.default_space, Path(__file__).with_name("space.toml")))


@hookimpl
def register_datasets(register: Register) -> None:
    """Register the synthetic shapes dataset."""
    register(Shapes())


@hookimpl
def register_strategies(register: Register) -> None:
    """Register hill climbing (the class, not an instance)."""
    register(HillClimb)


@hookimpl
def register_acquisitions(register: Register) -> None:
    """Register margin sampling."""
    register(Margin())


@hookimpl
def register_scorers(register: Register) -> None:
    """Register the word-count scorer."""
    register(WordCount)
