"""Multi-objective studies: `[study] objectives`, the nsga2 strategy, the Pareto front."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from autoplat.cli import main
from autoplat.core.config import load_config
from autoplat.core.registry import get_registry
from autoplat.core.space import SearchSpace
from autoplat.core.store import pareto_front
from autoplat.strategies.search.nsga2 import NSGA2Search
from autoplat.strategies.search.random import RandomSearch
from autoplat.testing import run_platform

SPACE = SearchSpace.from_dict({f"x{i}": {"low": 0.0, "high": 1.0} for i in range(5)})


def zdt1(params: dict[str, float]) -> list[float]:
    """ZDT1 (Zitzler, Deb and Thiele 2000): two objectives to minimize, a convex front."""
    f1 = params["x0"]
    g = 1 + 9 * sum(params[f"x{i}"] for i in range(1, 5)) / 4
    return [f1, g * (1 - math.sqrt(f1 / g))]


def hypervolume(points: list[list[float]], ref: tuple[float, float] = (1.1, 11.0)) -> float:
    """Area dominated by ``points`` (both minimized) up to ``ref``."""
    front, best = [], math.inf
    for a, b in sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1]):
        if b < best:
            front.append((a, b))
            best = b
    area, previous = 0.0, ref[1]
    for a, b in front:
        area += (ref[0] - a) * (previous - b)
        previous = b
    return area


def search(cls, seed: int, n: int = 200, **options) -> list[list[float]]:
    strategy = cls(SPACE, "minimize", seed, cls.Options(**options), ("minimize", "minimize"))
    points = []
    for _ in range(n):
        params = strategy.ask()
        values = zdt1(params)
        strategy.tell_values(params, values)
        points.append(values)
    return points


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsga2_covers_more_of_the_front_than_random(seed: int) -> None:
    ours = hypervolume(search(NSGA2Search, seed, population_size=20))
    random = hypervolume(search(RandomSearch, seed))
    assert ours > random + 0.3, (ours, random)


def test_nsga2_same_seed_same_proposals_and_replay() -> None:
    first = search(NSGA2Search, 5, n=30, population_size=6)
    assert search(NSGA2Search, 5, n=30, population_size=6) == first
    strategy = NSGA2Search(SPACE, "minimize", 5, directions=("minimize", "minimize"))
    history = []
    for _ in range(10):
        params = strategy.ask()
        history.append((params, zdt1(params)))
    resumed = NSGA2Search(SPACE, "minimize", 5, directions=("minimize", "minimize"))
    resumed.replay_values([*history, (history[0][0], None)])
    assert len(resumed.study.trials) == 11
    assert [t.values for t in resumed.study.trials[:10]] == [v for _, v in history]
    assert SPACE.dims.keys() == resumed.ask().keys()


def row(number: int, state: str = "complete", **metrics: float) -> dict:
    return {"number": number, "state": state, "metrics": metrics}


def test_pareto_front_by_direction() -> None:
    rows = [
        row(0, acc=0.9, size=100),
        row(1, acc=0.8, size=10),
        row(2, acc=0.7, size=50),  # dominated by 1
        row(3, acc=0.9, size=100),  # equal to 0: both stay
        row(4, acc=0.95, size=1000),
        row(5, "fail", acc=0.99, size=1),
        row(6, acc=0.5),  # no size
    ]
    objectives = [["acc", "maximize"], ["size", "minimize"]]
    assert pareto_front(rows, objectives) == [4, 0, 3, 1]
    assert pareto_front(rows, [["acc", "maximize"], ["size", "maximize"]]) == [4]


@pytest.mark.parametrize(
    ("study", "fragments"),
    [
        ('objectives = ["val_accuracy", "model_parms"]', ["study.objectives", "did you mean"]),
        ('objectives = ["val_accuracy"]', ["study.objectives", "at least 2"]),
        ('objectives = ["val_loss", "val_loss"]', ["study.objectives", "twice"]),
        (
            'metric = "val_loss"\nobjectives = ["val_accuracy", "val_loss"]',
            ["study.metric", "first objective"],
        ),
    ],
)
def test_bad_objectives_exit_2(write_config, tmp_path, capsys, study, fragments) -> None:
    path = write_config()
    path.write_text(path.read_text().replace("seed = 0", f"seed = 0\n{study}", 1))
    assert main(["search", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert str(path) in error and "Traceback" not in error
    for fragment in fragments:
        assert fragment in error, error


class FourArgumentRandom(RandomSearch):
    """A plugin written before multi-objective studies: its __init__ takes no directions."""

    def __init__(self, space, direction="maximize", seed=0, options=None) -> None:
        super().__init__(space, direction, seed, options)
        self.told: list[float | None] = []

    def tell(self, params, value) -> None:
        self.told.append(value)


def test_plugin_strategy_without_directions_runs_single_and_multi_objective(write_config):
    path = write_config()
    single = dataclasses.replace(load_config(path, get_registry()), strategy_cls=FourArgumentRandom)
    assert single.make_strategy().directions == ("maximize",)
    path.write_text(
        path.read_text().replace(
            "seed = 0", 'seed = 0\nobjectives = ["val_accuracy", "model_params"]', 1
        )
    )
    multi = dataclasses.replace(load_config(path, get_registry()), strategy_cls=FourArgumentRandom)
    strategy = multi.make_strategy()
    assert strategy.directions == ("maximize", "minimize")
    params = strategy.ask()
    strategy.tell_values(params, [0.5, 100.0])
    assert strategy.told == [0.5]  # the first objective


@pytest.mark.slow
def test_search_stores_objectives_and_show_prints_the_front(
    write_config, tmp_path, ray_address
) -> None:
    path = write_config(name="mo", trials=4, epochs=1, strategy="nsga2")
    text = path.read_text().replace(
        "seed = 0", 'seed = 0\nobjectives = ["val_accuracy", "model_params"]', 1
    )
    path.write_text(text.replace('name = "nsga2"', 'name = "nsga2"\npopulation_size = 2'))
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    result = run_platform("search", str(path), "--storage", url, "--address", ray_address)
    assert result.returncode == 0, result.stderr
    shown = json.loads(run_platform("show", "mo", "--storage", url, "--json").stdout)
    assert shown["study"]["objectives"] == {"val_accuracy": "maximize", "model_params": "minimize"}
    trials = {t["number"]: t for t in shown["trials"]}
    assert len(trials) == 4 and all(t["state"] == "complete" for t in trials.values())
    front = shown["pareto_front"]
    assert front and set(front) <= set(trials)
    sizes = {t["metrics"]["model_params"] for t in trials.values()}
    assert len(sizes) > 1  # widths 16 and 32 differ in size
    for n in trials:  # nothing off the front dominates a trial on it, and vice versa
        a = trials[n]["metrics"]
        dominated = any(
            trials[m]["metrics"]["val_accuracy"] >= a["val_accuracy"]
            and trials[m]["metrics"]["model_params"] <= a["model_params"]
            and (
                trials[m]["metrics"]["val_accuracy"],
                trials[m]["metrics"]["model_params"],
            )
            != (a["val_accuracy"], a["model_params"])
            for m in trials
        )
        assert (n in front) == (not dominated)
    table = run_platform("show", "mo", "--storage", url).stdout
    assert "Pareto front" in table and "model_params" in table
