"""The plugin module named by the entry point: one hook per kind of thing it adds.

Register classes (a search space registers a NamedSpace), each with
``lazy(name, "module:Class")``: autoplat imports a class (and torch with it) only when a
study uses it, so installing this plugin keeps every `platform` command fast to start.
"""

from __future__ import annotations

from pathlib import Path  # kind: architecture

from autoplat import hookimpl
from autoplat.core.hookspecs import Register, lazy
from autoplat.core.space import NamedSpace  # kind: architecture


# kind: architecture
@hookimpl
def register_architectures(register: Register) -> None:
    """Register the MLP."""
    register(lazy("example-mlp", "autoplat_example.mlp:MLP"))


# kind: architecture
@hookimpl
def register_search_spaces(register: Register) -> None:
    """Register the MLP's default space (space.toml next to this file)."""
    register(NamedSpace("example-mlp", Path(__file__).with_name("space.toml")))


# kind: dataset
@hookimpl
def register_datasets(register: Register) -> None:
    """Register the synthetic shapes dataset."""
    register(lazy("example-shapes", "autoplat_example.shapes:Shapes"))


# kind: strategy
@hookimpl
def register_strategies(register: Register) -> None:
    """Register hill climbing."""
    register(lazy("example-hill-climb", "autoplat_example.hill_climb:HillClimb"))


# kind: acquisition
@hookimpl
def register_acquisitions(register: Register) -> None:
    """Register margin sampling."""
    register(lazy("example-margin", "autoplat_example.margin:Margin"))


# kind: scorer
@hookimpl
def register_scorers(register: Register) -> None:
    """Register the word-count scorer."""
    register(lazy("example-word-count", "autoplat_example.word_count:WordCount"))
