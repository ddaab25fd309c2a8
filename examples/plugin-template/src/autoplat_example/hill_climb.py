"""Hill climbing with restarts: mutate the best params so far, one dimension at a time."""

from __future__ import annotations

import math
from typing import Any

from autoplat.core.interfaces import Direction, Strategy
from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.space import SearchSpace
from pydantic import Field


class HillClimb(Strategy):
    """Random samples first, then neighbours of the incumbent; restarts when stuck.

    A neighbour changes one searchable dimension of the best params seen since the
    last restart. After ``patience`` results without improvement (failures count as
    no improvement) the incumbent is dropped and the next ask samples afresh.
    """

    name = "example-hill-climb"

    class Options(BaseOptions):
        n_initial: int = Field(4, ge=1, description="random samples before climbing")
        patience: int = Field(6, ge=1, description="results without improvement before a restart")

    options: Options

    def __init__(
        self,
        space: SearchSpace,
        direction: Direction = "maximize",
        seed: int = 0,
        options: BaseOptions | None = None,
    ) -> None:
        super().__init__(space, direction, seed, options)
        self.best: tuple[dict[str, Any], float] | None = None
        self._asked = 0
        self._stale = 0
        self._searchable = list(space.searchable())

    def ask(self) -> dict[str, Any]:
        """A random sample while warming up or after a restart, else a neighbour of the best."""
        self._asked += 1
        if self.best is None or self._asked <= self.options.n_initial:
            return self.space.sample(self.rng)
        child = dict(self.best[0])
        if self._searchable:
            key = self.rng.choice(self._searchable)
            child[key] = self.space.dims[key].mutate(child[key], self.rng)
        return child

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Keep params that beat the incumbent; restart after ``patience`` misses."""
        ok = value is not None and not math.isnan(value)
        if ok and (self.best is None or self.better(value, self.best[1])):
            self.best = (dict(params), value)
            self._stale = 0
            return
        self._stale += 1
        if self._stale >= self.options.patience:
            self.best, self._stale = None, 0
