"""Tests for the first-party search strategies: random, grid, tpe and evolution (no Ray)."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable
from typing import Any

import pluggy
import pytest
from optuna.trial import TrialState
from pydantic import ValidationError

from autoplat.core import hookspecs
from autoplat.core.interfaces import Strategy
from autoplat.core.space import SearchSpace, SpaceError
from autoplat.plugins import builtin
from autoplat.strategies.search.evolution import RegularizedEvolution
from autoplat.strategies.search.grid import GridSearch
from autoplat.strategies.search.random import RandomSearch
from autoplat.strategies.search.tpe import TPESearch

MIXED = SearchSpace.from_dict(
    {
        "act": ["relu", "gelu", "silu"],
        "depth": {"low": 2, "high": 8},
        "width": {"low": 32, "high": 256, "step": 32},
        "units": {"low": 1, "high": 1024, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "lr": {"low": 1e-5, "high": 1e-1, "log": True},
        "epochs": 5,
    }
)
GRID = SearchSpace.from_dict(
    {"act": ["relu", "gelu"], "depth": {"low": 2, "high": 4}, "width": [64, 128], "epochs": 5}
)
# Each strategy with a space it can search (grid cannot enumerate float ranges).
CASES = {"random": MIXED, "grid": GRID, "tpe": MIXED, "evolution": MIXED}
CLASSES: dict[str, type[Strategy]] = {
    "random": RandomSearch,
    "grid": GridSearch,
    "tpe": TPESearch,
    "evolution": RegularizedEvolution,
}
SEEDED = ["random", "tpe", "evolution"]

Params = dict[str, Any]
History = list[tuple[Params, float | None]]


def objective(params: Params) -> float:
    """A deterministic score over MIXED (and GRID, whose keys are a subset)."""
    score = 0.1 * params["depth"] + (params["act"] == "gelu")
    if "lr" in params:
        score -= abs(math.log10(params["lr"]) + 3) + (params["dropout"] - 0.1) ** 2
    return score


def make(name: str, seed: int = 0, space: SearchSpace | None = None, **options: Any) -> Strategy:
    """The named strategy over its space in CASES (or ``space``), with these options."""
    cls = CLASSES[name]
    return cls(space or CASES[name], seed=seed, options=cls.Options(**options))


def drive(
    strategy: Strategy,
    n: int,
    f: Callable[[Params], float] = objective,
    fail_every: int = 0,
    history: History | None = None,
) -> list[Params]:
    """Ask and tell ``n`` times in sequence; every ``fail_every``-th trial fails."""
    proposals = []
    for i in range(1, n + 1):
        params = strategy.ask()
        if params is None:
            break
        proposals.append(params)
        value = None if fail_every and i % fail_every == 0 else f(params)
        strategy.tell(params, value)
        if history is not None:
            history.append((params, value))
    return proposals


def best_of(
    name: str, space: SearchSpace, f: Callable[[Params], float], seed: int, n: int
) -> float:
    """The lowest value of ``f`` that the named strategy finds in ``n`` trials."""
    strategy = CLASSES[name](space, direction="minimize", seed=seed)
    return min(f(params) for params in drive(strategy, n, f))


def test_plugin_registers_all_strategies() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin.search_strategies)
    registered: list[type[Strategy]] = []
    pm.hook.register_strategies(register=registered.append)
    assert [item.name for item in registered] == [
        "random",
        "grid",
        "tpe",
        "evolution",
        "reinforce",
        "local",
        "bananas",
        "bohb",
        "nsga2",
        "tpe-random",
        "nni",
    ]


@pytest.mark.parametrize("name", CLASSES)
def test_proposals_lie_in_the_space(name: str) -> None:
    proposals = drive(make(name), 40, fail_every=4)
    assert proposals
    for params in proposals:
        assert CASES[name].contains(params), params
        assert list(params) == list(CASES[name].dims)
        assert params["epochs"] == 5


@pytest.mark.parametrize("name", CLASSES)
def test_same_seed_same_proposals(name: str) -> None:
    options = {"shuffle": True} if name == "grid" else {}
    first = drive(make(name, seed=7, **options), 30, fail_every=5)
    second = drive(make(name, seed=7, **options), 30, fail_every=5)
    assert first == second


@pytest.mark.parametrize("name", SEEDED)
def test_different_seeds_differ(name: str) -> None:
    assert drive(make(name, seed=1), 15) != drive(make(name, seed=2), 15)


@pytest.mark.parametrize("name", ["tpe", "evolution"])
def test_direction_is_respected(name: str) -> None:
    maximizing = CLASSES[name](MIXED, direction="maximize", seed=3)
    minimizing = CLASSES[name](MIXED, direction="minimize", seed=3)
    assert drive(maximizing, 30, objective) == drive(minimizing, 30, lambda p: -objective(p))


@pytest.mark.parametrize("name", ["random", "grid", "evolution"])
def test_replay_restores_the_state(name: str) -> None:
    original = make(name, seed=5)
    history: History = []
    drive(original, 10, fail_every=3, history=history)
    resumed = make(name, seed=5)
    resumed.replay(history)
    assert drive(resumed, 10) == drive(original, 10)


def test_grid_enumerates_the_exact_product_then_stops() -> None:
    strategy = GridSearch(GRID)
    expected = [
        dict(zip(GRID.dims, values, strict=True))
        for values in itertools.product(["relu", "gelu"], [2, 3, 4], [64, 128], [5])
    ]
    assert strategy.size == 12
    assert drive(strategy, 100, fail_every=2) == expected
    assert strategy.ask() is None


def test_grid_shuffle_is_a_seeded_permutation() -> None:
    ordered = drive(GridSearch(GRID), 100)
    shuffled = drive(make("grid", seed=1, shuffle=True), 100)
    assert shuffled != ordered
    assert sorted(map(str, shuffled)) == sorted(map(str, ordered))
    assert shuffled != drive(make("grid", seed=2, shuffle=True), 100)


def test_grid_refuses_float_ranges_at_construction() -> None:
    space = GRID.merged(SearchSpace.from_dict({"lr": {"low": 1e-4, "high": 1e-2}}))
    with pytest.raises(SpaceError, match="'lr': float range"):
        GridSearch(space)


def test_tpe_records_failed_and_completed_trials() -> None:
    strategy = make("tpe")
    drive(strategy, 12, fail_every=3)
    states = [trial.state for trial in strategy.study.trials]
    assert states.count(TrialState.FAIL) == 4
    assert states.count(TrialState.COMPLETE) == 8


def test_tpe_handles_concurrent_and_duplicate_asks() -> None:
    strategy = TPESearch(SearchSpace.from_dict({"epochs": 5}))
    asked = [strategy.ask() for _ in range(3)]
    assert asked == [{"epochs": 5}] * 3
    for value in (1.0, None, 2.0):
        strategy.tell({"epochs": 5}, value)
    states = [trial.state for trial in strategy.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]


def test_tpe_replay_adds_trials_without_asking() -> None:
    history: History = []
    drive(make("tpe", seed=4), 15, fail_every=5, history=history)
    resumed = make("tpe", seed=4)
    resumed.replay(history)
    trials = resumed.study.trials
    assert [trial.value for trial in trials] == [value for _, value in history]
    assert [trial.params["lr"] for trial in trials] == [params["lr"] for params, _ in history]
    assert all(MIXED.contains(params) for params in drive(resumed, 5))
    assert len(resumed.study.trials) == 20


def test_tpe_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        TPESearch.Options(n_startup_trials=-1)
    with pytest.raises(ValidationError, match="Extra inputs"):
        TPESearch.Options(n_startup=5)


def test_tpe_beats_random_on_a_smooth_objective() -> None:
    space = SearchSpace.from_dict(
        {"x": {"low": -5.0, "high": 5.0}, "y": {"low": -5.0, "high": 5.0}}
    )

    def bowl(params: Params) -> float:
        return (params["x"] - 1.3) ** 2 + (params["y"] + 0.7) ** 2

    tpe = statistics.mean(best_of("tpe", space, bowl, seed, 40) for seed in range(5))
    rand = statistics.mean(best_of("random", space, bowl, seed, 40) for seed in range(5))
    print(
        f"best squared distance after 40 trials, mean of 5 seeds: tpe {tpe:.4f}, random {rand:.4f}"
    )
    assert tpe < rand / 4


def test_evolution_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        RegularizedEvolution.Options(population=1)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        RegularizedEvolution.Options(sample_size=0)
    with pytest.raises(ValidationError, match=r"sample_size \(5\) cannot exceed population \(4\)"):
        RegularizedEvolution.Options(population=4, sample_size=5)


def test_evolution_ages_out_the_oldest_not_the_worst_and_drops_failures() -> None:
    strategy = make("evolution", population=3, sample_size=2)
    told = [(MIXED.sample(strategy.rng), value) for value in (100.0, 1.0, 2.0, 3.0, 4.0)]
    for params, value in told:
        strategy.tell(params, value)
    strategy.tell(told[0][0], None)
    strategy.tell(told[0][0], math.nan)
    assert list(strategy.population) == told[2:]


def test_evolution_samples_randomly_while_asks_outrun_tells() -> None:
    strategy = make("evolution", population=4, sample_size=2)
    proposals = [strategy.ask() for _ in range(20)]
    assert all(MIXED.contains(params) for params in proposals)
    assert len({str(params) for params in proposals}) == 20
    assert not strategy.population


def test_evolution_mutates_exactly_one_searchable_dimension() -> None:
    strategy = make("evolution", population=4, sample_size=2)
    parent = MIXED.sample(strategy.rng)
    for value in range(4):
        strategy.ask()
        strategy.tell(parent, float(value))
    mutated = set()
    for _ in range(40):
        child = strategy.ask()
        assert MIXED.contains(child)
        changed = [key for key in MIXED.dims if child[key] != parent[key]]
        assert len(changed) == 1, changed
        mutated.update(changed)
    assert mutated == set(MIXED.searchable())


def test_evolution_beats_random_on_a_categorical_objective() -> None:
    dims = 12
    space = SearchSpace.from_dict({f"d{i}": list("abcd") for i in range(dims)} | {"epochs": 3})

    def mismatches(params: Params) -> float:
        return sum(params[f"d{i}"] != "abcd"[i % 4] for i in range(dims))

    evo = statistics.mean(best_of("evolution", space, mismatches, seed, 200) for seed in range(10))
    rand = statistics.mean(best_of("random", space, mismatches, seed, 200) for seed in range(10))
    print(
        f"best mismatches of 12 after 200 trials, mean of 10 seeds: evolution {evo:.2f}, "
        f"random {rand:.2f}"
    )
    assert evo <= rand - 1.5
