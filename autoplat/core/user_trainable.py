"""A search over the user's own training function (``autoplat.search(config, trainable=fn)``).

``fn(params, report)`` trains with one trial's ``params`` and calls ``report(epoch,
{"val_accuracy": ...})`` after every epoch. Its config has no ``[architecture]``,
``[dataset]`` or ``[benchmark]``: ``[space]`` lists the params ``fn`` receives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autoplat.core.config import (
    METRICS,
    Config,
    Resolved,
    _first_objective,
    _validation_message,
    load_plugins,
    read_config,
    resolve_search,
)
from autoplat.core.interfaces import OneShotStrategy
from autoplat.core.registry import Registry
from autoplat.core.space import SearchSpace, SpaceError

STORED_PREFIXES = ("train_", "val_", "test_")  # the metric names a trial's history keeps
TrainFn = Callable[[dict[str, Any], Callable[[int, dict[str, float]], None]], None]


def load_trainable_config(path: Path, registry: Registry) -> Resolved:
    """Validate a config for a study of the user's own function; ConfigError names the key."""
    raw, source = read_config(path)
    load_plugins(raw, source, registry)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _validation_message(exc, Config, source) from None
    for key in ("architecture", "dataset", "benchmark"):
        if getattr(config, key) is not None:
            raise source.error(
                (key,),
                f"a study of your own trainable trains with it, not with a [{key}]; remove "
                f"[{key}], or call search() without trainable=",
            )
    if not config.space:
        raise source.error(
            ("space",),
            "is required with trainable=: list the params your function receives, e.g. "
            "lr = { low = 1e-4, high = 1e-1, log = true }",
        )
    _first_objective(config, raw, source)
    _check_own_metrics(config, source)
    try:
        space = SearchSpace.from_dict(config.space)
    except SpaceError as exc:
        raise source.error(("space",), str(exc)) from None
    strategy_cls = source.lookup(registry, "strategies", config.strategy.name, ("strategy", "name"))
    if issubclass(strategy_cls, OneShotStrategy):
        raise source.error(
            ("strategy", "name"),
            f"'{strategy_cls.name}' trains a supernet of a built-in architecture; use an "
            "ask/tell strategy such as 'tpe' or 'evolution' with your own trainable",
        )
    return resolve_search(path, config, raw, source, strategy_cls, {"space": space})


def _check_own_metrics(config: Config, source: Any) -> None:
    """The study metric is one the history keeps (train_/val_/test_), with a direction;
    other objectives are metrics with a known direction."""
    study = config.study
    key = "objectives" if study.objectives else "metric"
    if not study.metric.startswith(STORED_PREFIXES):
        raise source.error(
            ("study", key),
            f"'{study.metric}' is not a stored metric name; name it train_*, val_* or test_* "
            "(e.g. val_accuracy) and report it under that name",
        )
    if study.direction is None and study.metric not in METRICS:
        raise source.error(
            ("study", "direction"),
            f"is required for your own metric '{study.metric}': add direction = "
            '"maximize" (or "minimize")',
        )
    for metric in (study.objectives or [])[1:]:
        if metric not in METRICS:
            raise source.error(
                ("study", "objectives"),
                f"'{metric}' has no known direction; objectives after the first are one of "
                f"{', '.join(METRICS)}",
            )


def ray_trainable(fn: TrainFn) -> Callable[[dict[str, Any], Any], None]:
    """``fn(params, report)`` as the Ray function trainable ``run_study`` takes.

    Each report is passed on when the next one comes, so the last (the one ``fn`` made
    before it returned) carries ``finished``: the trial completed rather than stopped.
    """

    def run(config: dict[str, Any], job: Any = None) -> None:
        import ray
        from ray import tune

        node = ray.get_runtime_context().get_node_id()
        held: list[dict[str, Any]] = []

        def report(epoch: int, metrics: dict[str, float]) -> None:
            values = _checked(epoch, metrics)
            if held:
                tune.report(held.pop())
            held.append({**values, "epoch": int(epoch), "node": node})

        fn(dict(config), report)
        if not held:
            raise ValueError("the trainable returned without calling report(epoch, metrics)")
        tune.report({**held.pop(), "finished": 1})

    run.__name__ = getattr(fn, "__name__", "trainable")
    return run


def _checked(epoch: Any, metrics: Any) -> dict[str, float]:
    """A report's metrics as floats; ValueError (the trial's stored error) when unusable."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"report(epoch, metrics): epoch must be an int >= 0, got {epoch!r}")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"report(epoch, metrics): metrics must be a non-empty dict: {metrics!r}")
    out = {}
    for name, value in metrics.items():
        if not str(name).startswith(STORED_PREFIXES) and name != "model_params":
            raise ValueError(
                f"report: metric '{name}' would not be stored; name metrics train_*, val_* "
                "or test_* (or model_params)"
            )
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"report: metric '{name}' = {value!r} is not a number") from None
    return out
