"""Single-path one-shot NAS (SPOS), after Guo et al. 2020 and Li & Talwalkar 2019.

"Single Path One-Shot Neural Architecture Search with Uniform Sampling" (ECCV 2020) and
"Random Search and Reproducibility for Neural Architecture Search" (UAI 2019): train the
supernet with one uniformly sampled path per batch, so every cell's weights are trained
in proportion; then search over cells scored by their validation accuracy with inherited
weights, after re-estimating BatchNorm statistics on a few training batches (the
supernet's statistics mix every path). The search here is regularized evolution (Real
et al. 2019, ``strategies/search/evolution.py``) rather than SPOS's own genetic search.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from autoplat.core.interfaces import Splits
from autoplat.core.space import Categorical, Fixed, ParamsKey, SearchSpace, params_key
from autoplat.core.training import Report, autocast, check_finite
from autoplat.strategies.search.evolution import RegularizedEvolution
from autoplat.strategies.search.oneshot import OneShot
from autoplat.strategies.search.oneshot.supernet import SuperNet, inherited_score


class SPOS(OneShot):
    """Uniform single-path supernet training, then regularized evolution on inherited weights.

    Each training batch runs one cell drawn uniformly (each edge's op independently).
    After every epoch, ``report`` gets the training loss and the mean validation accuracy
    and loss of ``eval_cells`` fixed random cells with inherited weights. Evolution then
    evaluates ``population + cycles`` proposals (repeats are scored once) and the
    ``top_k`` distinct cells by inherited validation accuracy (ties: lower loss) are
    returned.

    After ``search``: ``supernet`` is the trained supernet and ``history`` lists every
    distinct cell evolution scored, in order, as ``(cell, val_accuracy, val_loss)``.
    """

    name = "spos"

    class Options(RegularizedEvolution.Options):  # population, sample_size and their check
        epochs: int = Field(30, ge=1, description="supernet training epochs")
        lr: float = Field(0.1, gt=0, description="SGD learning rate, decayed to 0 by a cosine")
        momentum: float = Field(0.9, ge=0, lt=1, description="SGD (Nesterov) momentum")
        weight_decay: float = Field(4e-5, ge=0, description="SGD weight decay")
        batch_size: int = Field(64, ge=1, description="training batch size")
        channels: int | None = Field(
            None, ge=1, description="supernet width; None: the space's channels (nb201: 16)"
        )
        calibration_batches: int = Field(
            4, ge=1, description="training batches that re-estimate BatchNorm per scored cell"
        )
        eval_cells: int = Field(
            4, ge=1, description="random cells whose inherited accuracy is reported per epoch"
        )
        population: int = Field(16, ge=2, description="evolution's population size")
        sample_size: int = Field(4, ge=1, description="cells drawn per evolution tournament")
        cycles: int = Field(48, ge=0, description="mutated proposals after the population")
        top_k: int = Field(1, ge=1, description="how many distinct cells to return")

    options: Options

    def search(self, splits: Splits, report: Report) -> list[dict[str, Any]]:
        """Train the supernet, evolve cells on inherited weights, return the best ``top_k``.

        Raises:
            TrialFailed: The training loss became NaN or infinite.
        """
        o = self.options
        device, generator, supernet, (x, y), val, calibration = self.prepare(splits)
        rng = random.Random(self.seed)
        probes = [self.random_cell(rng) for _ in range(o.eval_cells)]

        optimizer = torch.optim.SGD(
            supernet.parameters(),
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.momentum > 0,
        )
        steps = o.epochs * math.ceil(len(x) / o.batch_size)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for epoch in range(1, o.epochs + 1):
            supernet.train()
            loss_sum = torch.zeros((), device=device)
            for idx in torch.randperm(len(x), generator=generator).to(device).split(o.batch_size):
                with autocast(device):
                    logits = supernet(x[idx], self.random_cell(rng))
                loss = F.cross_entropy(logits.float(), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(idx)
            train_loss = loss_sum.item() / len(x)
            check_finite(train_loss, epoch, "spos: the supernet's loss")
            scores = [inherited_score(supernet, c, calibration, val, o.batch_size) for c in probes]
            report(
                epoch,
                {
                    "train_loss": train_loss,
                    "val_accuracy": statistics.fmean(acc for acc, _ in scores),
                    "val_loss": statistics.fmean(loss for _, loss in scores),
                },
            )
        self.supernet = supernet
        cells = self._evolve(supernet, calibration, val)
        return [self.to_params(cell) for cell in cells]

    def _evolve(
        self,
        supernet: SuperNet,
        calibration: torch.Tensor,
        val: tuple[torch.Tensor, torch.Tensor],
    ) -> list[dict[str, str]]:
        """Regularized evolution on inherited accuracy; the ``top_k`` distinct cells found."""
        o = self.options
        space = SearchSpace(
            {
                e: Categorical(ops) if len(ops) > 1 else Fixed(ops[0])
                for e, ops in self.candidates.items()
            }
        )
        evolution = RegularizedEvolution(
            space,
            "maximize",
            self.seed + 1,  # a stream apart from the training paths'
            RegularizedEvolution.Options(population=o.population, sample_size=o.sample_size),
        )
        scores: dict[ParamsKey, tuple[float, float]] = {}
        self.history: list[tuple[dict[str, str], float, float]] = []
        for _ in range(o.population + o.cycles):
            cell = evolution.ask()
            key = params_key(cell)
            if key not in scores:
                scores[key] = inherited_score(supernet, cell, calibration, val, o.batch_size)
                self.history.append((cell, *scores[key]))
            evolution.tell(cell, scores[key][0])
        ranked = sorted(self.history, key=lambda entry: (-entry[1], entry[2]))
        return [cell for cell, _, _ in ranked[: o.top_k]]
