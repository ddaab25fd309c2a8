"""The Python API: run searches, active learning and curation from scripts and notebooks,
and read any study back (``docs/python.md``).

A config is a TOML file's path or a dict with the same structure; both are validated as
the CLI validates them (``autoplat.ConfigError`` names the key). Runs write to the same
store as the CLI, so ``platform show``, ``platform tui`` and ``--resume`` work on them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from autoplat.core.config import config_dict, load_plugins, read_config
from autoplat.core.registry import Registry, get_registry
from autoplat.core.results import StudyView, list_rows
from autoplat.core.results import delete_study as remove_study
from autoplat.core.store import DEFAULT_URL, Store

ConfigLike = str | os.PathLike | dict[str, Any]
Event = Callable[[str, dict[str, Any]], None]


@contextlib.contextmanager
def _config_path(config: ConfigLike) -> Iterator[Path]:
    """The path ``read_config`` reads ``config`` from (a dict is held in memory)."""
    if isinstance(config, dict):
        with config_dict(config) as path:
            yield path
    else:
        yield Path(config)


def _registry(plugins: Iterable[str]) -> Registry:
    """The process-wide registry with the local plugin modules ``plugins`` loaded (paths
    relative to the working directory, or module names)."""
    registry = get_registry()
    for spec in plugins:
        registry.load_module(spec)
    return registry


def search(
    config: ConfigLike,
    *,
    storage: str | None = None,
    resume: bool = False,
    trainable: Callable[[dict[str, Any], Callable[[int, dict[str, float]], None]], None]
    | None = None,
    plugins: Iterable[str] = (),
    address: str | None = None,
    on_event: Event | None = None,
) -> StudyView:
    """Run (or, with ``resume``, continue) a search and return its study.

    ``trainable=fn`` searches your own code: ``fn(params, report)`` trains with one
    trial's params (from ``[space]``; the config then has no ``[architecture]`` or
    ``[dataset]``) and calls ``report(epoch, {"val_accuracy": ...})`` after each epoch.
    ``storage``: a SQLAlchemy URL (default ``[study] storage``, else runs/platform.db);
    ``address``: a Ray cluster; ``on_event(kind, data)``: trial start/result/end events.
    """
    from autoplat.core.config import load_config
    from autoplat.core.study import run_study
    from autoplat.core.user_trainable import load_trainable_config, ray_trainable

    if trainable is not None and not callable(trainable):
        raise TypeError(f"trainable must be a function fn(params, report), got {trainable!r}")
    registry = _registry(plugins)
    with _config_path(config) as path:
        load = load_trainable_config if trainable is not None else load_config
        resolved = load(path, registry)
    store = Store(storage or resolved.config.study.storage or DEFAULT_URL)
    fn = ray_trainable(trainable) if trainable is not None else None
    run_study(resolved, store, address=address, resume=resume, on_event=on_event, trainable=fn)
    return StudyView(store, resolved.config.study.name)


def run_al(
    config: ConfigLike,
    *,
    storage: str | None = None,
    resume: bool = False,
    plugins: Iterable[str] = (),
    address: str | None = None,
    on_event: Event | None = None,
) -> StudyView:
    """Run (or continue) active-learning experiments (``platform al``); returns the study
    (``.al_curves()``: every round of every acquisition and seed)."""
    from autoplat.core.al_study import load_al_config
    from autoplat.core.al_study import run_al as run

    registry = _registry(plugins)
    with _config_path(config) as path:
        load_plugins(*read_config(path), registry)
        resolved = load_al_config(path, registry)
    store = Store(storage or resolved.config.study.storage or DEFAULT_URL)
    run(resolved, store, address=address, resume=resume, on_event=on_event)
    return StudyView(store, resolved.config.study.name)


def curate(
    config: ConfigLike,
    *,
    storage: str | None = None,
    resume: bool = False,
    plugins: Iterable[str] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> StudyView:
    """Score and filter records (``platform curate``); returns the study (``.curation()``:
    the scores and kept files and their counts)."""
    from autoplat.core.curation import load_curate_config, run_curation

    registry = _registry(plugins)
    with _config_path(config) as path:
        load_plugins(*read_config(path), registry)
        resolved = load_curate_config(path, registry)
    store = Store(storage or resolved.config.study.storage or DEFAULT_URL)
    run_curation(resolved, store, resume=resume, progress=progress)
    return StudyView(store, resolved.config.study.name)


def load_study(name: str, storage: str | None = None) -> StudyView:
    """A stored study (any kind), read-only; ``storage`` defaults to runs/platform.db."""
    return StudyView(Store(storage or DEFAULT_URL, create=False), name)


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """Every study of a store: name, kind, state, metric, direction, trials, best_value,
    started_at, ended_at."""
    return list_rows(Store(storage or DEFAULT_URL, create=False))


def copy_study(
    name: str, to: str, *, storage: str | None = None, new_name: str | None = None
) -> StudyView:
    """Copy a study with all its rows to the store at ``to`` (SQLite or PostgreSQL, or the
    same store under ``new_name``); files it records keep their paths."""
    target = Store(to)
    copy = Store(storage or DEFAULT_URL, create=False).copy_study(name, target, new_name)
    return StudyView(target, copy.name)


def delete_study(name: str, storage: str | None = None) -> dict[str, Any]:
    """Delete a study's rows, and of its files only the checkpoints in its own checkpoint
    folder; returns ``{"study", "trials", "removed_files", "kept_files"}``."""
    return remove_study(Store(storage or DEFAULT_URL), name)
