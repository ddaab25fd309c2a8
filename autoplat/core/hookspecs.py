"""The plugin contract: one ``register_*`` hook per kind of thing, plus event hooks.

Every ``register_*`` hook receives a ``register`` callable; call it once per item.
Items are objects (or classes) with a ``name`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "autoplat"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[Any], None]


@hookspec
def register_architectures(register: Register) -> None:
    """Register model architectures: ``register(arch)`` with an ``Architecture`` instance."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: ``register(dataset)`` with a ``Dataset`` instance."""


@hookspec
def register_strategies(register: Register) -> None:
    """Register search strategies: ``register(cls)`` with a ``Strategy`` subclass."""


@hookspec
def register_acquisitions(register: Register) -> None:
    """Register active-learning acquisition functions: ``register(acquisition)``."""


@hookspec
def register_scorers(register: Register) -> None:
    """Register data-quality scorers: ``register(cls)`` with a ``Scorer`` subclass."""


@hookspec
def register_embedders(register: Register) -> None:
    """Register embedders for curation: ``register(cls)`` with an ``Embedder`` subclass."""


@hookspec
def register_language_models(register: Register) -> None:
    """Register reference language models: ``register(cls)`` with a ``LanguageModel`` subclass."""


@hookspec
def register_search_spaces(register: Register) -> None:
    """Register named search spaces: ``register(NamedSpace(name, path_or_dict))``."""


@hookspec
def register_benchmarks(register: Register) -> None:
    """Register tabular benchmarks: ``register(benchmark)`` with a ``Benchmark`` instance."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``platform`` CLI; ``cli`` is the argparse subparsers object."""


@hookspec
def on_trial_result(study: str, trial: int, step: int, metrics: dict[str, float]) -> None:
    """Called in the driver for every metric report of a trial (after it is stored)."""


@hookspec
def on_study_end(study: str, best: dict[str, Any] | None) -> None:
    """Called in the driver when a study ends; ``best`` is the best trial as a dict."""
