"""Regularized (aging) evolution, after Real et al. 2019.

"Regularized Evolution for Image Classifier Architecture Search" (AAAI 2019): keep a
population of the most recent trials; each new proposal mutates the best of a random
sample of the population; the oldest member, not the worst, leaves the population.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Self

from pydantic import Field, model_validator

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Strategy


class RegularizedEvolution(Strategy):
    """Aging evolution with tournament selection and single-dimension mutation.

    The first ``population`` asks are random samples. After that each ask draws
    ``sample_size`` members of the population uniformly at random (with replacement, as
    in the paper), takes the best, and mutates one searchable dimension chosen at random.
    Completed trials join the population; once it holds more than ``population`` members
    the oldest leaves. Failed trials (None or NaN) never join. While the population holds
    fewer than ``sample_size`` members (asks outrunning tells, or failures), asks keep
    sampling randomly.
    """

    name = "evolution"

    class Options(BaseOptions):
        population: int = Field(8, ge=2, description="how many recent trials the population keeps")
        sample_size: int = Field(3, ge=1, description="how many members each tournament draws")

        @model_validator(mode="after")
        def _sample_fits_population(self) -> Self:
            if self.sample_size > self.population:
                raise ValueError(
                    f"sample_size ({self.sample_size}) cannot exceed population ({self.population})"
                )
            return self

    options: Options

    def setup(self) -> None:
        self.population: deque[tuple[dict[str, Any], float]] = deque(maxlen=self.options.population)
        self._searchable = list(self.space.searchable())
        self._asked = 0

    def ask(self) -> dict[str, Any]:
        """Return a random sample while the population fills, then a mutated tournament winner."""
        self._asked += 1
        warming_up = self._asked <= self.options.population
        if warming_up or len(self.population) < self.options.sample_size:
            return self.space.sample(self.rng)
        tournament = self.rng.choices(self.population, k=self.options.sample_size)
        parent, best = tournament[0]
        for params, value in tournament[1:]:
            if self.better(value, best):
                parent, best = params, value
        return self._mutate(parent)

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Add a completed trial to the population, ageing out the oldest; drop failures."""
        if value is not None and not math.isnan(value):
            self.population.append((dict(params), value))

    def _mutate(self, parent: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``parent`` with one searchable dimension mutated."""
        child = {key: parent[key] for key in self.space.dims}
        if self._searchable:
            key = self.rng.choice(self._searchable)
            child[key] = self.space.dims[key].mutate(child[key], self.rng)
        return child
