"""Each plugin of this package against autoplat's conformance kit."""

from __future__ import annotations

import pytest
from autoplat.core.interfaces import DataSpec
from autoplat.testing import (
    AcquisitionContract,
    ArchitectureContract,
    DatasetContract,
    ScorerContract,
    StrategyContract,
)

from autoplat_example.hill_climb import HillClimb
from autoplat_example.margin import Margin
from autoplat_example.mlp import MLP
from autoplat_example.shapes import Shapes
from autoplat_example.word_count import WordCount


class TestMLP(ArchitectureContract):
    @pytest.fixture
    def architecture(self):
        return MLP()

    @pytest.fixture
    def data_spec(self):
        return DataSpec("classification", "image", (1, 12, 12), 4)


class TestShapes(DatasetContract):
    @pytest.fixture
    def dataset(self):
        return Shapes()


class TestHillClimb(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return HillClimb

    @pytest.fixture
    def options(self):
        return HillClimb.Options(n_initial=3, patience=2)  # restarts within the test's trials


class TestMargin(AcquisitionContract):
    @pytest.fixture
    def acquisition(self):
        return Margin()


class TestWordCount(ScorerContract):
    @pytest.fixture
    def make_scorer(self):
        return lambda: WordCount(WordCount.Options(min_words=3))
