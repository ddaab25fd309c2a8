"""One-shot NAS on the NAS-Bench-201 cell: one supernet trained once, cells derived from it.

Unlike an ask/tell ``Strategy``, a ``OneShot`` strategy runs inside a single trial: it
trains a weight-sharing supernet (``supernet.py``) on the training split, selects cells
on the validation split and returns them as full params of the space, to be trained
from scratch as ordinary trials. ``SPOS`` samples one path per batch and then evolves
cells scored with inherited weights; ``DARTS`` relaxes each edge to a softmax mixture
and keeps the argmax.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from typing import Any

import torch

from autoplat.core.errors import ConfigError
from autoplat.core.hookspecs import Register, hookimpl
from autoplat.core.interfaces import DataSpec, OneShotStrategy, Splits
from autoplat.core.space import Categorical, Fixed
from autoplat.core.training import Report, select_device
from autoplat.plugins.architectures.nb201 import NB201
from autoplat.plugins.benchmarks.nb201 import EDGES, OPS
from autoplat.strategies.search.oneshot.supernet import SuperNet


class OneShot(OneShotStrategy):
    """A one-shot strategy over a space of NAS-Bench-201 cells.

    The space must hold the 6 edges of ``EDGES``, each a list of ops from ``OPS`` (any
    subset) or one fixed op; every other dimension must be fixed. Fixed ``channels`` and
    ``cells_per_stage`` shape the supernet (unless the ``channels`` option overrides the
    width); the other fixed params (e.g. ``lr``, ``epochs``) are only copied into the
    returned params, for training the derived cells.

    Args:
        space: The search space.
        direction: The study's direction. Selection inside the supernet always maximizes
            validation accuracy, whatever the study's metric.
        seed: Seeds the supernet's initialisation, the batch order and every sampled cell.
        options: The strategy's options; None: the defaults.

    Raises:
        ConfigError: The space is not a space of NAS-Bench-201 cells.
    """

    def setup(self) -> None:
        self.candidates = self._candidates()

    def _candidates(self) -> dict[str, tuple[str, ...]]:
        """The candidate ops of each edge; ConfigError for a space this cannot search."""
        missing = [edge for edge in EDGES if edge not in self.space.dims]
        if missing:
            raise ConfigError(
                f"one-shot strategy '{self.name}' searches NAS-Bench-201 cells, but the space "
                f"has no {', '.join(missing)}; use architecture 'nb201' and its space"
            )
        candidates: dict[str, tuple[str, ...]] = {}
        for edge in EDGES:
            dim = self.space.dims[edge]
            if isinstance(dim, Categorical):
                ops = dim.choices
            elif isinstance(dim, Fixed):
                ops = (dim.value,)
            else:
                raise ConfigError(
                    f"one-shot strategy '{self.name}': '{edge}' must be a list of ops from "
                    f"{', '.join(OPS)}, not a range"
                )
            unknown = [op for op in ops if op not in OPS]
            if unknown:
                raise ConfigError(
                    f"one-shot strategy '{self.name}': '{edge}' has unknown ops "
                    f"{', '.join(map(repr, unknown))}; choose from {', '.join(OPS)}"
                )
            candidates[edge] = tuple(dict.fromkeys(ops))  # drop repeated choices
        varying = [key for key in self.space.searchable() if key not in EDGES]
        if varying:
            raise ConfigError(
                f"one-shot strategy '{self.name}' searches only the cell's edges, but "
                f"{', '.join(repr(k) for k in varying)} vary; fix them (e.g. lr = 0.01) or "
                "use an ask/tell strategy such as 'evolution'"
            )
        return candidates

    def build_supernet(self, spec: DataSpec, channels: int | None) -> SuperNet:
        """A supernet for ``spec``: ``channels`` (None: the space's or nb201's) and cells."""
        fixed = {**NB201.defaults, **self.space.fixed()}
        width = int(fixed["channels"]) if channels is None else channels
        return SuperNet(self.candidates, spec, width, int(fixed["cells_per_stage"]))

    def prepare(self, splits: Splits) -> tuple[Any, ...]:
        """Seed torch, build the supernet on the device and move the data there.

        Returns:
            The device, a seeded generator, the supernet, the train and val tensors, and
            ``calibration_batches`` x ``batch_size`` train inputs for BatchNorm.
        """
        o = self.options
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        device = select_device()
        supernet = self.build_supernet(splits.spec, o.channels).to(device)
        x, y = (t.to(device) for t in splits.train)
        val = (splits.val[0].to(device), splits.val[1].to(device))
        picked = torch.randperm(len(x), generator=generator)[: o.calibration_batches * o.batch_size]
        return device, generator, supernet, (x, y), val, x[picked]

    def random_cell(self, rng: random.Random) -> dict[str, str]:
        """A cell with each edge's op drawn uniformly from its candidates."""
        return {edge: rng.choice(ops) for edge, ops in self.candidates.items()}

    def to_params(self, cell: dict[str, str]) -> dict[str, Any]:
        """The full params of the space for ``cell``: its edges and the space's fixed values."""
        fixed = self.space.fixed()
        return {key: cell[key] if key in cell else fixed[key] for key in self.space.dims}

    @abstractmethod
    def search(self, splits: Splits, report: Report) -> list[dict[str, Any]]:
        """Train a supernet on ``splits.train`` and derive cells on ``splits.val``.

        Args:
            splits: The dataset's splits; ``test`` is never read.
            report: Called as ``report(epoch, metrics)`` after every supernet epoch.

        Returns:
            Distinct derived architectures as full params of the space, best first.
        """


@hookimpl
def register_strategies(register: Register) -> None:
    """Register the one-shot strategies SPOS and DARTS."""
    from autoplat.strategies.search.oneshot.darts import DARTS
    from autoplat.strategies.search.oneshot.spos import SPOS

    register(SPOS)
    register(DARTS)
