"""NSGA-II: multi-objective evolution (Deb et al. 2002) through Optuna's ``NSGAIISampler``."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.samplers import NSGAIISampler
from pydantic import Field

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.strategies.search.tpe import TPESearch


class NSGA2Search(TPESearch):
    """Optuna's ``NSGAIISampler`` over every objective of the study (``[study] objectives``).

    Generations of ``population_size`` trials; parents are chosen by non-dominated rank
    and crowding distance, children by uniform crossover and mutation. With one objective
    it is a plain genetic algorithm. Optuna keeps no intermediate values for several
    objectives, so ``report`` is ignored; a trial a scheduler stops early counts as
    pruned (it never enters a Pareto front).
    """

    name = "nsga2"

    class Options(BaseOptions):
        population_size: int = Field(8, ge=2, description="trials per generation")
        crossover_prob: float = Field(0.9, ge=0, le=1, description="a child is a crossover")
        mutation_prob: float | None = Field(
            None, gt=0, le=1, description="per parameter; default 1 / number of parameters"
        )

    options: Options

    def _make_study(self) -> optuna.Study:
        sampler = NSGAIISampler(
            population_size=self.options.population_size,
            crossover_prob=self.options.crossover_prob,
            mutation_prob=self.options.mutation_prob,
            seed=self.seed,
        )
        return optuna.create_study(directions=list(self.directions), sampler=sampler)

    def report(self, params: dict[str, Any], step: int, value: float) -> None:
        """Intermediate values are not kept (Optuna has none for several objectives)."""
