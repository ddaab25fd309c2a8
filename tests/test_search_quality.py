"""Issue 21's search quality: BANANAS' settings, its local-mutation acquisition optimizer and
encoding, and which config the table benchmarks return (benchmarks/strategies_tables.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from autoplat.core.space import Categorical, SearchSpace, params_key
from autoplat.strategies.search.bananas import Bananas, encode, numeric_grid

ROOT = Path(__file__).resolve().parent.parent


def test_bananas_defaults_are_the_papers_and_the_named_deviations():
    """White et al.: 10 random architectures first, an ensemble of 5, 100 mutations of the
    best architectures scored by the acquisition. Deviations (docs/fidelity.md): expected
    improvement by default (the paper's independent Thompson sampling is ``its``), 2 x 32
    nets for 100 steps (the paper's are deeper), numeric grids by rank."""
    options = Bananas.Options()
    assert (options.n_init, options.ensemble, options.acquisition) == (10, 5, "ei")
    assert (options.candidates, options.parents) == (100, 10)
    assert (options.layers, options.hidden, options.steps) == (2, 32, 100)
    assert options.numeric_grids == "ordinal"


def score(params: dict[str, str], order: int) -> float:
    """How many dimensions are "a", with a small distinct part so ranks never tie."""
    return sum(value == "a" for value in params.values()) + order / 1000


@pytest.mark.parametrize("acquisition", ["its", "ei"])
def test_acquisition_optimizer_proposes_unasked_neighbours_of_the_best(acquisition):
    space = SearchSpace.from_dict({f"e{i}": ["a", "b", "c", "d"] for i in range(5)})
    options = Bananas.Options(n_init=6, steps=20, parents=2, candidates=30, acquisition=acquisition)
    strategy = Bananas(space, "maximize", 0, options)
    told: list[tuple[dict[str, str], float]] = []
    for i in range(12):
        params = strategy.ask()
        assert params_key(params) not in {params_key(p) for p, _ in told}, "asked again"
        if i >= options.n_init:  # one-dimension mutations of the two best told so far
            best = sorted(told, key=lambda item: item[1], reverse=True)[:2]
            edits = [sum(params[k] != parent[k] for k in params) for parent, _ in best]
            assert 1 in edits, f"{params} is no neighbour of {[p for p, _ in best]}"
        told.append((params, score(params, i)))
        strategy.tell(params, told[-1][1])


def test_numeric_grids_are_ranks_unless_one_hot():
    dims = SearchSpace.from_dict(
        {
            "width": [64, 16, 256],
            "act": ["relu", "tanh"],
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        }
    ).searchable()
    params = {"width": 64, "act": "tanh", "lr": 1e-3}
    assert encode(dims, params, ordinal=True) == pytest.approx([0.5, 0.0, 1.0, 0.5])
    assert encode(dims, params) == pytest.approx([1.0, 0.0, 0.0, 0.0, 1.0, 0.5])
    assert not numeric_grid(Categorical((True, False)))  # bools stay one-hot
    assert numeric_grid(Categorical((1, 2.5)))


def test_bananas_with_one_hot_grids_still_searches():
    space = SearchSpace.from_dict({"x": list(range(8)), "y": list(range(8))})
    options = Bananas.Options(n_init=4, steps=20, numeric_grids="onehot")
    strategy = Bananas(space, "minimize", 1, options)
    for _ in range(10):
        params = strategy.ask()
        strategy.tell(params, float((params["x"] - 5) ** 2 + (params["y"] - 2) ** 2))
    assert len(strategy.history) == 10


# -- the table benchmarks: which config a run returns ---------------------------------------


@pytest.fixture
def tables(monkeypatch):
    """benchmarks/strategies_tables.py as a module (it sets AUTOPLAT_BUILTIN_ONLY: undone)."""
    monkeypatch.setenv("AUTOPLAT_BUILTIN_ONLY", "1")
    spec = importlib.util.spec_from_file_location(
        "strategies_tables", ROOT / "benchmarks" / "strategies_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "strategies_tables", module)  # its dataclass needs it
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script prepends the repository
    spec.loader.exec_module(module)
    return module


def fake_table(tables, direction: str):
    """Two configs: "lucky" observes best once but has the worse seed mean."""
    observed = {"lucky": 95.0, "steady": 92.0}
    mean = {"lucky": 90.0, "steady": 92.0}
    if direction == "minimize":
        observed, mean = {k: -v for k, v in observed.items()}, {k: -v for k, v in mean.items()}
    return tables.Table(
        "fake",
        SearchSpace.from_dict({"c": ["lucky", "steady"]}),
        direction,
        lambda params, seed: (observed[params["c"]], 1.0),
        lambda params: mean[params["c"]],
        mean["steady"],
        math.inf,
        3,
    )


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_run_returns_its_best_single_observation_scored_by_seed_mean(tables, direction):
    oracle = tables.Oracle(fake_table(tables, direction), seed=0, evals=2)
    oracle({"c": "steady"})
    oracle({"c": "lucky"})
    assert oracle.spent() and oracle.best[1] == {"c": "lucky"}
    assert oracle.regret() == pytest.approx(2.0)  # |92 - 90|: the lucky config's seed mean


def test_summarize_merges_rows_files_later_runs_win(tables, tmp_path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text(
        json.dumps(["bananas", "t", 0, 1.0, 5, 0.1])
        + "\n"
        + json.dumps(["tpe", "t", 0, 2.0, 5, 0.1])
        + "\n"
    )
    new.write_text(json.dumps(["bananas", "t", 0, 0.5, 6, 0.2]) + "\n")
    rows = {row[0]: row for row in tables.merge_rows([old, new])}
    assert rows["bananas"][3] == 0.5 and rows["tpe"][3] == 2.0 and len(rows) == 2
