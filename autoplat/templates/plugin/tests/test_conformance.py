"""Each plugin of this package against autoplat's conformance kit."""

from __future__ import annotations

import pytest
from autoplat.core.interfaces import DataSpec  # kind: architecture
from autoplat.testing import (
    AcquisitionContract,  # kind: acquisition
    ArchitectureContract,  # kind: architecture
    DatasetContract,  # kind: dataset
    ScorerContract,  # kind: scorer
    StrategyContract,  # kind: strategy
)

from autoplat_example.hill_climb import HillClimb  # kind: strategy
from autoplat_example.margin import Margin  # kind: acquisition
from autoplat_example.mlp import MLP  # kind: architecture
from autoplat_example.shapes import Shapes  # kind: dataset
from autoplat_example.word_count import WordCount  # kind: scorer


# kind: architecture
class TestMLP(ArchitectureContract):
    @pytest.fixture
    def architecture(self):
        return MLP()

    @pytest.fixture
    def data_spec(self):
        return DataSpec("classification", "image", (1, 12, 12), 4)


# kind: dataset
class TestShapes(DatasetContract):
    @pytest.fixture
    def dataset(self):
        return Shapes()


# kind: strategy
class TestHillClimb(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return HillClimb

    @pytest.fixture
    def options(self):
        return HillClimb.Options(n_initial=3, patience=2)  # restarts within the test's trials


# kind: acquisition
class TestMargin(AcquisitionContract):
    @pytest.fixture
    def acquisition(self):
        return Margin()


# kind: scorer
class TestWordCount(ScorerContract):
    @pytest.fixture
    def make_scorer(self):
        return lambda: WordCount(WordCount.Options(min_words=3))
