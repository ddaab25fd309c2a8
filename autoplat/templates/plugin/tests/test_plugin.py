"""The package as autoplat sees it: entry point, registered names, the example config."""

from __future__ import annotations

from pathlib import Path  # kind: architecture, dataset, strategy

import torch  # kind: acquisition
from autoplat.core.config import load_config  # kind: architecture, dataset, strategy
from autoplat.core.registry import (
    Registry,
    get_registry,  # kind: architecture, dataset, strategy
)
from autoplat.core.space import SearchSpace  # kind: strategy

from autoplat_example.hill_climb import HillClimb  # kind: strategy
from autoplat_example.margin import Margin  # kind: acquisition

EXPECTED = {
    "architectures": ["example-mlp"],  # kind: architecture
    "search_spaces": ["example-mlp"],  # kind: architecture
    "datasets": ["example-shapes"],  # kind: dataset
    "strategies": ["example-hill-climb"],  # kind: strategy
    "acquisitions": ["example-margin"],  # kind: acquisition
    "scorers": ["example-word-count"],  # kind: scorer
}


def test_entry_point_loads_the_plugin(monkeypatch):
    monkeypatch.setenv("AUTOPLAT_BUILTIN_ONLY", "0")  # as `platform` runs for users
    registry = Registry()
    registry.load_entry_points()
    info = registry.plugins["example"]
    assert (info.package, info.status) == ("autoplat-example", "ok")
    assert info.registered == EXPECTED


# kind: architecture, dataset, strategy
def test_example_config_is_valid():
    resolved = load_config(Path(__file__).parents[1] / "example.toml", get_registry())
    assert resolved.architecture.name == "example-mlp"
    assert resolved.strategy_cls is HillClimb


# kind: strategy
def test_hill_climb_finds_the_best_of_a_small_space():
    space = SearchSpace.from_dict({"a": [0, 1, 2, 3], "b": [0, 1, 2, 3]})
    strategy = HillClimb(space, "minimize", seed=0, options=HillClimb.Options(n_initial=2))
    losses = []
    for _ in range(20):
        params = strategy.ask()
        losses.append(abs(params["a"] - 2) + abs(params["b"] - 1))
        strategy.tell(params, losses[-1])
    assert min(losses) == 0


# kind: acquisition
def test_margin_prefers_uncertain_examples():
    probs = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    picked = Margin().select({"probs": probs}, 2, torch.Generator().manual_seed(0))
    assert picked.tolist() == [1, 2]
