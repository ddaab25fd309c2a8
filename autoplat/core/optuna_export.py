"""Write a study into an Optuna storage, so optuna-dashboard and ``optuna.visualization``
work on it unchanged: params with distributions from the stored search space, values (one
per objective), intermediate values per epoch, states, and the rest as user attrs."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from autoplat.core.errors import AutoplatError, StoreError, StoreFault
from autoplat.core.space import DATASET_PREFIX, SearchSpace, SpaceError
from autoplat.core.store import Store, Study, Trial, TrialState, objectives

NUMBER_ATTR = "autoplat_number"  # a trial's number in the autoplat store


def stored_space(study: Study) -> SearchSpace:
    """The search space a study ran with, rebuilt from its stored config: the named
    space (when its plugin is installed) with the ``[space]`` overrides. Empty for
    studies without one (active learning, curation)."""
    from autoplat.core.registry import get_registry

    raw = json.loads(study.config or "{}")
    overrides = dict(raw.get("space") or {})
    data = overrides.pop("dataset", None) or {}
    overrides |= {DATASET_PREFIX + k: v for k, v in data.items()}
    base = SearchSpace()
    for kind, section in (("architectures", "architecture"), ("benchmarks", "benchmark")):
        if isinstance(raw.get(section), dict):
            registry = get_registry()
            try:
                plugin = registry.get(kind, raw[section]["name"])
                name = raw[section].get("space") or plugin.default_space
                base = registry.get("search_spaces", name).load()
            except (AutoplatError, KeyError, OSError, TypeError):  # e.g. its plugin is gone:
                base = SearchSpace()  # distributions from the values the trials took
    try:
        return base.merged(SearchSpace.from_dict(overrides))
    except SpaceError:
        return base


def _plain(value: Any) -> Any:
    """A param value as Optuna stores it (lists and dicts as JSON text)."""
    plain = value is None or isinstance(value, bool | int | float | str)
    return value if plain else json.dumps(value)


def distributions(space: SearchSpace, trials: list[Trial]) -> dict[str, Any]:
    """One distribution per param: the space's when it holds every stored value, else a
    categorical of the values the trials took."""
    import optuna

    seen: dict[str, list[Any]] = {}
    for t in trials:
        for key, value in t.params_dict.items():
            values = seen.setdefault(key, [])
            if _plain(value) not in values:
                values.append(_plain(value))
    out = {}
    for key, values in seen.items():
        dim = space.dims.get(key)
        if dim is not None and all(dim.contains(v) for v in values):
            out[key] = dim.to_optuna()
        else:
            out[key] = optuna.distributions.CategoricalDistribution(values)
    return out


def _state(trial: Trial, values: list[float] | None) -> Any:
    from optuna.trial import TrialState as OptunaState

    if trial.state == TrialState.COMPLETE:
        return OptunaState.COMPLETE if values is not None else OptunaState.FAIL
    return {
        TrialState.RUNNING: OptunaState.RUNNING,
        TrialState.PRUNED: OptunaState.PRUNED,
    }.get(trial.state, OptunaState.FAIL)  # failed and interrupted


def _frozen(
    store: Store, study: Study, trial: Trial, dists: dict[str, Any], goals: list[tuple[str, str]]
) -> Any:
    import optuna

    steps = store.metrics(trial.id)
    final: dict[str, float] = {}
    for step in sorted(steps):
        final.update(steps[step])
    final[study.metric] = trial.value if trial.value is not None else final.get(study.metric)
    values = [final.get(name) for name, _ in goals]
    ok = all(v is not None and math.isfinite(v) for v in values)
    state = _state(trial, [float(v) for v in values] if ok else None)
    complete = state == optuna.trial.TrialState.COMPLETE
    intermediate = {
        step: m[study.metric]
        for step, m in steps.items()
        if study.metric in m and math.isfinite(m[study.metric])
    }
    attrs = {
        NUMBER_ATTR: trial.number,
        "autoplat_state": trial.state.value,
        "node": trial.node,
        "error": trial.error,
        **{f"final_{k}": v for k, v in final.items() if v is not None},
        **trial.attrs_dict,
    }
    frozen = optuna.trial.FrozenTrial(
        number=trial.number,
        state=state,
        value=None,
        values=[float(v) for v in values] if complete else None,
        datetime_start=trial.started_at,
        datetime_complete=trial.ended_at if state.is_finished() else None,
        params={k: _plain(v) for k, v in trial.params_dict.items()},
        distributions={k: dists[k] for k in trial.params_dict},
        user_attrs={k: v for k, v in attrs.items() if v is not None},
        system_attrs={},
        intermediate_values={} if len(goals) > 1 else intermediate,
        trial_id=trial.id,
    )
    return frozen


def export_to_optuna(store: Store, study: Study, url: str, name: str | None = None) -> Any:
    """Write ``study`` (all its trials) as a new study ``name`` (default: its own) of the
    Optuna storage at ``url``; returns the ``optuna.Study``. StoreError when the storage
    cannot be opened or already has a study of this name; StoreFault when writing fails
    (the partly written study is removed)."""
    import optuna

    name = name or study.name
    goals = objectives(study)
    rows = store.trials(study.id)
    dists = distributions(stored_space(study), rows)
    trials = [_frozen(store, study, t, dists, goals) for t in rows]
    storage = _open(url)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        target = optuna.create_study(
            storage=storage, study_name=name, directions=[d for _, d in goals]
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise StoreError(
            f"the Optuna storage {url} already has a study '{name}'; pass another name "
            "(--name) or storage"
        ) from None
    finally:
        optuna.logging.set_verbosity(verbosity)
    try:
        with warnings.catch_warnings():  # experimental in Optuna; the dashboard shows them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            target.set_metric_names([metric for metric, _ in goals])
        for key, value in (
            ("autoplat_kind", study.kind),
            ("autoplat_state", study.state.value),
            ("autoplat_storage", store.display_url),
        ):
            target.set_user_attr(key, value)
        target.add_trials(trials)
    except SQLAlchemyError as exc:
        with contextlib.suppress(Exception):  # the storage may be what failed
            optuna.delete_study(study_name=name, storage=storage)
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StoreFault(
            f"writing study '{name}' to the Optuna storage {url} failed ({detail}); fix that "
            "and export again"
        ) from None
    return target


def _open(url: str) -> Any:
    """The Optuna storage at ``url``; StoreError (one line) when it cannot be opened."""
    import optuna

    try:
        make_url(url)
        return optuna.storages.RDBStorage(url)
    except ArgumentError:
        raise StoreError(
            f"--to '{url}' is not a valid SQLAlchemy URL; use e.g. sqlite:///optuna.db"
        ) from None
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StoreError(f"cannot open the Optuna storage '{url}': {detail}") from None
