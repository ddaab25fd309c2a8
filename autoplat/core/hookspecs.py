"""The plugin contract: one ``register_<kind>`` hook per kind of thing, plus event hooks.

Every ``register_<kind>`` hook receives a ``register`` callable; call it once per item.
One rule for every kind that implements an interface (architectures, datasets,
strategies, acquisitions, scorers, embedders, language models, benchmarks): register the
**class**. Kinds marked shared get one instance, made on first use; the others are
instantiated per use with their options. Search spaces and commands register values
(``NamedSpace``, ``Command``). ``lazy(name, "module:Class")`` registers an item without
importing its module, so registration stays fast: ``platform --help`` imports no torch.

This module stays light (no torch, pydantic, Ray): every command imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

if TYPE_CHECKING:
    from autoplat.core.interfaces import (
        Acquisition,
        Architecture,
        Benchmark,
        Dataset,
        Embedder,
        LanguageModel,
        Scorer,
        Strategy,
    )
    from autoplat.core.space import NamedSpace

PROJECT = "autoplat"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

T = TypeVar("T")
Register = Callable[[T], None]
"""The callable a ``register_<kind>`` hook gets, e.g. ``Register[type[Architecture]]``."""


@dataclass(frozen=True)
class Lazy:
    """An item registered by name and import path; imported the first time it is used."""

    name: str
    target: str  # "package.module:Attribute"


def lazy(name: str, target: str) -> Lazy:
    """Register ``target`` ("package.module:Class") under ``name`` without importing it."""
    module, _, attribute = target.partition(":")
    if not module or not attribute:
        raise ValueError(f"lazy target {target!r}: write it as 'package.module:Class'")
    return Lazy(name, target)


@dataclass(frozen=True)
class Command:
    """A ``platform`` subcommand: ``arguments(parser)`` adds its options, ``run(args)``
    does the work and returns the exit code. Keep the module that defines it light:
    import heavy libraries inside ``run``."""

    name: str
    help: str  # one line, shown by `platform --help`
    example: str  # one or more command lines, shown by `platform NAME --help`
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""  # a paragraph for `platform NAME --help` (default: help)


@dataclass(frozen=True)
class Kind:
    """What a ``register_<kind>`` hook registers; derived from the hookspec below."""

    name: str  # "architectures"
    noun: str  # "architecture"
    interface: str  # "module:Class" every registered class must subclass, or a value type
    shared: bool = False  # one instance for all users (made on first use) vs. the class

    @property
    def registers_classes(self) -> bool:
        return self.interface.startswith("autoplat.core.interfaces:")


KINDS: dict[str, Kind] = {}


def _kind(noun: str, interface: str, shared: bool = False) -> Callable[[Any], Any]:
    def mark(spec: Any) -> Any:
        name = spec.__name__.removeprefix("register_")
        KINDS[name] = Kind(name, noun, interface, shared)
        return hookspec(spec)

    return mark


@_kind("architecture", "autoplat.core.interfaces:Architecture", shared=True)
def register_architectures(register: Register[type[Architecture]]) -> None:
    """Register model architectures: ``register(ArchitectureClass)``."""


@_kind("dataset", "autoplat.core.interfaces:Dataset", shared=True)
def register_datasets(register: Register[type[Dataset]]) -> None:
    """Register datasets: ``register(DatasetClass)``."""


@_kind("strategy", "autoplat.core.interfaces:SearchStrategy")
def register_strategies(register: Register[type[Strategy]]) -> None:
    """Register search strategies: ``register(StrategyClass)``."""


@_kind("acquisition", "autoplat.core.interfaces:Acquisition", shared=True)
def register_acquisitions(register: Register[type[Acquisition]]) -> None:
    """Register active-learning acquisition functions: ``register(AcquisitionClass)``."""


@_kind("scorer", "autoplat.core.interfaces:Scorer")
def register_scorers(register: Register[type[Scorer]]) -> None:
    """Register data-quality scorers: ``register(ScorerClass)``."""


@_kind("embedder", "autoplat.core.interfaces:Embedder")
def register_embedders(register: Register[type[Embedder]]) -> None:
    """Register embedders for curation: ``register(EmbedderClass)``."""


@_kind("language model", "autoplat.core.interfaces:LanguageModel")
def register_language_models(register: Register[type[LanguageModel]]) -> None:
    """Register reference language models: ``register(LanguageModelClass)``."""


@_kind("search space", "autoplat.core.space:NamedSpace")
def register_search_spaces(register: Register[NamedSpace]) -> None:
    """Register named search spaces: ``register(NamedSpace(name, path_or_dict))``."""


@_kind("benchmark", "autoplat.core.interfaces:Benchmark", shared=True)
def register_benchmarks(register: Register[type[Benchmark]]) -> None:
    """Register tabular benchmarks: ``register(BenchmarkClass)``."""


@_kind("command", "autoplat.core.hookspecs:Command")
def register_commands(register: Register[Command]) -> None:
    """Add ``platform`` subcommands: ``register(Command(name, help, example, arguments, run))``."""


@hookspec
def on_trial_result(study: str, trial: int, step: int, metrics: dict[str, float]) -> None:
    """Called in the driver for every metric report of a trial (after it is stored)."""


@hookspec
def on_study_end(study: str, best: dict[str, Any] | None) -> None:
    """Called in the driver when a study ends; ``best`` is the best trial as a dict."""
