"""Single-path one-shot NAS (SPOS), after Guo et al. 2020 and Li & Talwalkar 2019.

"Single Path One-Shot Neural Architecture Search with Uniform Sampling" (ECCV 2020) and
"Random Search and Reproducibility for Neural Architecture Search" (UAI 2019): train the
supernet with one uniformly sampled path per batch, so every cell's weights are trained
in proportion; then search over cells scored by their validation accuracy with inherited
weights, after re-estimating BatchNorm statistics on a few training batches (the
supernet's statistics mix every path).

The search is the paper's evolutionary search (Algorithm 1 and its reference code): a
population of random cells, then per iteration the ``parents`` best cells so far (the
paper's top-k) breed ``crossovers`` children (each edge from one of two random parents)
and ``mutations`` children (each edge of a random parent re-drawn with probability
``mutation_prob``), and random cells fill the population up. A cell seen before, or one
over ``max_params`` / ``max_flops``, is rejected and another drawn (at most 10 draws per
wanted cell, as the reference code). Paper: population 50, top-k 10, 25 + 25 children,
probability 0.1, 20 iterations; the defaults here are smaller, for a CPU.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import DataSpec, Splits
from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.space import ParamsKey, params_key
from autoplat.core.training import Report, autocast, check_finite
from autoplat.strategies.search.oneshot.base import Cell, OneShot

TRIES = 10  # draws per wanted cell before giving up, as SPOS's reference code
RETIRED = {  # options of the regularized evolution SPOS ran before
    "sample_size": "'parents' (the top-k that breed)",
    "cycles": "'iterations' (generations of the evolutionary search)",
}


def crossover(a: Mapping[str, str], b: Mapping[str, str], rng: random.Random) -> Cell:
    """A child taking each edge's op from parent ``a`` or ``b`` with equal chance."""
    return {edge: rng.choice((a[edge], b[edge])) for edge in a}


def mutate(
    cell: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    prob: float,
    rng: random.Random,
) -> Cell:
    """A child re-drawing each edge uniformly from its candidates with probability ``prob``."""
    return {
        edge: rng.choice(candidates[edge]) if rng.random() < prob else op
        for edge, op in cell.items()
    }


class SPOS(OneShot):
    """Uniform single-path supernet training, then SPOS's evolutionary search.

    Each training batch runs one cell drawn uniformly (each edge's op independently).
    After every epoch, ``report`` gets the training loss and the mean validation accuracy
    and loss of ``eval_cells`` fixed random cells with inherited weights. The search then
    scores at most ``population x iterations`` distinct cells by inherited validation
    accuracy (ties: lower loss) and returns the ``top_k`` best.

    ``max_params`` and ``max_flops`` bound the network a cell will be trained as: the
    architecture's network at the space's fixed params on the dataset's input, as its
    ``path_cost`` counts it (nb201: FLOPs are multiply-adds, as NAS-Bench-201 counts them).

    After ``search``: ``supernet`` is the trained supernet, ``history`` lists every cell
    scored, in order, as ``(cell, val_accuracy, val_loss)``, and ``rejected`` counts the
    draws refused for the constraint.
    """

    name = "spos"

    class Options(BaseOptions):
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
        population: int = Field(16, ge=1, description="cells per generation (paper: 50)")
        parents: int = Field(4, ge=1, description="best cells so far that breed (paper: 10)")
        mutations: int = Field(8, ge=0, description="mutated children per generation (paper: 25)")
        crossovers: int = Field(
            8, ge=0, description="crossover children per generation (paper: 25)"
        )
        mutation_prob: float = Field(
            0.1, ge=0, le=1, description="chance that a mutation re-draws an edge (paper: 0.1)"
        )
        iterations: int = Field(4, ge=1, description="generations scored (paper: 20)")
        max_params: float | None = Field(
            None, gt=0, description="reject cells whose network has more parameters"
        )
        max_flops: float | None = Field(
            None, gt=0, description="reject cells whose network needs more FLOPs (multiply-adds)"
        )
        top_k: int = Field(1, ge=1, description="how many distinct cells to return")

        @model_validator(mode="before")
        @classmethod
        def _retired(cls, data: Any) -> Any:
            """Name the replacement of an option of the evolution SPOS ran before."""
            for key, instead in RETIRED.items():
                if isinstance(data, dict) and key in data:
                    raise ValueError(
                        f"spos no longer takes '{key}': it runs its paper's evolutionary "
                        f"search now; use {instead}"
                    )
            return data

        @model_validator(mode="after")
        def _children_fit(self) -> SPOS.Options:
            if self.mutations + self.crossovers > self.population:
                raise ValueError("mutations + crossovers must be at most population")
            return self

    options: Options

    def search(self, splits: Splits, report: Report) -> list[dict[str, Any]]:
        """Train the supernet, search cells on inherited weights, return the best ``top_k``.

        Raises:
            TrialFailed: The training loss became NaN or infinite.
            ConfigError: No cell of the space meets ``max_params`` / ``max_flops``.
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
            scores = [
                self.inherited_score(supernet, c, calibration, val, o.batch_size) for c in probes
            ]
            report(
                epoch,
                {
                    "train_loss": train_loss,
                    "val_accuracy": statistics.fmean(acc for acc, _ in scores),
                    "val_loss": statistics.fmean(loss for _, loss in scores),
                },
            )
        self.supernet = supernet

        def score(cell: Cell) -> tuple[float, float]:
            return self.inherited_score(supernet, cell, calibration, val, o.batch_size)

        cells = self.evolve(score, self.network_cost(splits.spec))
        return [self.to_params(cell) for cell in cells]

    def network_cost(self, spec: DataSpec) -> Callable[[Cell], tuple[int, int]]:
        """Parameters and FLOPs of the network a cell will be trained as, for ``spec``:
        the architecture's ``path_cost`` at the space's fixed params."""
        return self.architecture.path_cost(self.candidates, self.space.fixed(), spec)

    def evolve(
        self,
        score: Callable[[Cell], tuple[float, float]],
        measure: Callable[[Cell], tuple[int, int]],
    ) -> list[Cell]:
        """SPOS's evolutionary search; ``score``: (accuracy, loss), ``measure``: (params, FLOPs).

        Returns:
            The ``top_k`` best distinct cells scored, best first.
        """
        o = self.options
        rng = random.Random(self.seed + 1)  # a stream apart from the training paths'
        self.history: list[tuple[Cell, float, float]] = []
        self.rejected = 0
        seen: set[ParamsKey] = set()
        costs: dict[ParamsKey, tuple[int, int]] = {}

        def legal(cell: Cell) -> bool:
            key = params_key(cell)
            if key in seen:
                return False
            if o.max_params is not None or o.max_flops is not None:
                if key not in costs:
                    costs[key] = measure(cell)
                params, flops = costs[key]
                if params > (o.max_params or math.inf) or flops > (o.max_flops or math.inf):
                    self.rejected += 1
                    return False
            seen.add(key)
            return True

        def draw(make: Callable[[], Cell], wanted: int) -> list[Cell]:
            cells: list[Cell] = []
            for _ in range(TRIES * wanted):
                if len(cells) == wanted:
                    break
                if legal(cell := make()):
                    cells.append(cell)
            return cells

        def ranked() -> list[Cell]:
            return [c for c, _, _ in sorted(self.history, key=lambda e: (-e[1], e[2]))]

        population = draw(lambda: self.random_cell(rng), o.population)
        if not population:
            raise ConfigError(
                f"spos: none of {TRIES * o.population} random cells meets max_params = "
                f"{o.max_params} / max_flops = {o.max_flops}; raise the limit"
            )
        for generation in range(o.iterations):
            self.history += [(cell, *score(cell)) for cell in population]
            parents = ranked()[: o.parents]  # the top-k of every cell scored so far
            if generation == o.iterations - 1:
                break
            population = draw(
                lambda top=parents: mutate(rng.choice(top), self.candidates, o.mutation_prob, rng),
                o.mutations,
            )
            population += draw(
                lambda top=parents: crossover(rng.choice(top), rng.choice(top), rng), o.crossovers
            )
            population += draw(lambda: self.random_cell(rng), o.population - len(population))
        return ranked()[: o.top_k]
