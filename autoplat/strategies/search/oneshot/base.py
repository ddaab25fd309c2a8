"""What SPOS and DARTS share: the space's choices, the supernet from the study's
architecture (a ``SupernetArchitecture``), and scoring a path with inherited weights."""

from __future__ import annotations

import random
from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import (
    DataSpec,
    OneShotStrategy,
    Splits,
    SupernetArchitecture,
)
from autoplat.core.training import Report, autocast, evaluate, select_device

Cell = dict[str, str]
"""One path through a supernet (a cell, for nb201): an op for each choice."""


class OneShot(OneShotStrategy):
    """A one-shot strategy over the choices of a supernet-capable architecture's space.

    The architecture (``SupernetArchitecture``) names the choices of the space and their
    ops (``supernet_choices``); every other dimension must be fixed. The fixed params
    shape the supernet (e.g. nb201's ``channels`` and ``cells_per_stage``; the
    ``channels`` option overrides the width) and are copied into the returned params, for
    training the derived architectures (e.g. ``lr``, ``epochs``).

    Args:
        space: The search space.
        direction: The study's direction. Selection inside the supernet always maximizes
            validation accuracy, whatever the study's metric.
        seed: Seeds the supernet's initialisation, the batch order and every sampled path.
        options: The strategy's options; None: the defaults.
        directions: The study's directions, one per objective.
        architecture: The study's architecture, which builds the supernet (keyword).

    Raises:
        ConfigError: The architecture cannot build a supernet, or its supernet cannot
            search the space.
    """

    def setup(self) -> None:
        if not isinstance(self.architecture, SupernetArchitecture):
            raise ConfigError(
                f"one-shot strategy '{self.name}' trains a weight-sharing supernet, which "
                f"architecture '{self.architecture.name}' cannot build (it is no "
                "SupernetArchitecture); use one that can, such as 'nb201', or an ask/tell "
                "strategy such as 'evolution'"
            )
        self.candidates = self._candidates()

    def _candidates(self) -> dict[str, tuple[str, ...]]:
        """The candidate ops of each choice; ConfigError for a space this cannot search."""
        try:
            candidates = self.architecture.supernet_choices(self.space)
        except ValueError as exc:
            raise ConfigError(f"one-shot strategy '{self.name}': {exc}") from None
        varying = [key for key in self.space.searchable() if key not in candidates]
        if varying:
            raise ConfigError(
                f"one-shot strategy '{self.name}' searches only the supernet's choices, but "
                f"{', '.join(repr(k) for k in varying)} vary; fix them (e.g. lr = 0.01) or "
                "use an ask/tell strategy such as 'evolution'"
            )
        return candidates

    def build_supernet(self, spec: DataSpec, channels: int | None) -> nn.Module:
        """A supernet for ``spec``: ``channels`` (None: the space's or the architecture's)."""
        params = self.space.fixed()
        if channels is not None:
            params["channels"] = channels
        return self.architecture.build_supernet(self.candidates, params, spec)

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

    def random_cell(self, rng: random.Random) -> Cell:
        """A path with each choice's op drawn uniformly from its candidates."""
        return {edge: rng.choice(ops) for edge, ops in self.candidates.items()}

    def to_params(self, cell: Cell) -> dict[str, Any]:
        """The full params of the space for ``cell``: its ops and the space's fixed values."""
        fixed = self.space.fixed()
        return {key: cell[key] if key in cell else fixed[key] for key in self.space.dims}

    def inherited_score(
        self,
        supernet: nn.Module,
        cell: Cell,
        calibration: torch.Tensor,
        val: tuple[torch.Tensor, torch.Tensor],
        batch_size: int,
    ) -> tuple[float, float]:
        """Validation accuracy and loss of ``cell`` with inherited weights and recalibrated BN.

        Args:
            supernet: The trained supernet.
            cell: An op for each choice.
            calibration: Training inputs (on the supernet's device) to recalibrate BN on.
            val: Validation inputs and labels.
            batch_size: Batch size of the recalibration.
        """
        net = self.architecture.inherit(supernet, cell)
        recalibrate_bn(net, calibration, batch_size)
        return evaluate(net, *val, calibration.device)

    @abstractmethod
    def search(self, splits: Splits, report: Report) -> list[dict[str, Any]]:
        """Train a supernet on ``splits.train`` and derive paths on ``splits.val``.

        Args:
            splits: The dataset's splits; ``test`` is never read.
            report: Called as ``report(epoch, metrics)`` after every supernet epoch.

        Returns:
            Distinct derived architectures as full params of the space, best first.
        """


@torch.no_grad()
def recalibrate_bn(net: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Re-estimate every BatchNorm's running statistics as the exact average over ``x``.

    SPOS does this before scoring a path: the supernet's statistics mix many paths.
    Leaves ``net`` in train mode with its BatchNorm momentum unchanged.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches below
    net.train()
    for start in range(0, len(x), batch_size):
        with autocast(x.device):
            net(x[start : start + batch_size])
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
