"""The search-space grammar and its conversions to Optuna and Ray Tune."""

from __future__ import annotations

import random

import optuna
import pytest
from ray import tune

from autoplat.core.space import (
    Categorical,
    Fixed,
    FloatRange,
    IntRange,
    SearchSpace,
    SpaceError,
    parse_dimension,
)

RAW = {
    "depth": [2, 4, 6],
    "heads": {"choices": [2, 4]},
    "width": {"low": 32, "high": 128, "step": 32},
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "layers": {"low": 1, "high": 64, "log": True},
    "dropout": {"low": 0.0, "high": 0.5},
    "epochs": 5,
    "act": "gelu",
}


def test_grammar_parses_every_form():
    space = SearchSpace.from_dict(RAW)
    assert space.dims["depth"] == Categorical((2, 4, 6))
    assert space.dims["heads"] == Categorical((2, 4))
    assert space.dims["width"] == IntRange(32, 128, False, 32)
    assert space.dims["lr"] == FloatRange(1e-4, 1e-2, True)
    assert space.dims["layers"] == IntRange(1, 64, True)
    assert space.dims["dropout"] == FloatRange(0.0, 0.5)
    assert space.fixed() == {"epochs": 5, "act": "gelu"}
    assert set(space.searchable()) == {"depth", "heads", "width", "lr", "layers", "dropout"}


def test_samples_stay_inside_and_are_seeded():
    space = SearchSpace.from_dict(RAW)
    a = [space.sample(random.Random(3)) for _ in range(3)]
    b = [space.sample(random.Random(3)) for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    for _ in range(2000):
        params = space.sample(rng)
        assert space.contains(params), params
        assert params["width"] % 32 == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "empty list"),
        ({"low": 3}, "needs 'low' and 'high'"),
        ({"low": 1, "high": 2, "sigma": 1}, "needs 'low' and 'high'"),
        ({"low": 2, "high": 1}, "must be below"),
        ({"low": 0, "high": 1.0, "log": True}, "needs 'low' > 0"),
        ({"low": "a", "high": 2}, "must be numbers"),
        ({"low": 1, "high": 9, "step": 0}, "positive integer"),
        ({"low": 0.1, "high": 0.9, "step": 0.1}, "int ranges only"),
        ({"low": 1, "high": 9, "log": "yes"}, "true or false"),
        ([[1, 2], [3]], "numbers, strings or booleans"),
    ],
)
def test_bad_dimensions_are_refused(raw, message):
    with pytest.raises(SpaceError, match=message) as info:
        parse_dimension("width", raw)
    assert str(info.value).startswith("'width'")


def test_to_optuna():
    dists = SearchSpace.from_dict(RAW).to_optuna()
    assert "epochs" not in dists
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["width"] == optuna.distributions.IntDistribution(32, 128, step=32)
    assert dists["depth"] == optuna.distributions.CategoricalDistribution([2, 4, 6])


def test_to_tune_domains_sample_inside_the_space():
    space = SearchSpace.from_dict(RAW)
    tune_space = space.to_tune()
    assert tune_space["epochs"] == 5
    assert isinstance(tune_space["lr"], tune.search.sample.Float)
    for _ in range(200):
        sample = {k: v.sample() if hasattr(v, "sample") else v for k, v in tune_space.items()}
        assert space.contains(sample), sample


def test_merge_overrides_and_bool_is_not_int():
    base = SearchSpace.from_dict({"depth": [2, 4], "epochs": 5})
    merged = base.merged(SearchSpace.from_dict({"epochs": 1, "lr": [0.1]}))
    assert merged.dims == {
        "depth": Categorical((2, 4)),
        "epochs": Fixed(1),
        "lr": Categorical((0.1,)),
    }
    assert not Categorical((1, 2)).contains(True)
    assert not IntRange(0, 3).contains(True)


def test_grid_refuses_float_ranges():
    assert IntRange(1, 7, step=3).grid() == [1, 4, 7]
    with pytest.raises(SpaceError, match="cannot be enumerated"):
        FloatRange(0.0, 1.0).grid()
