"""Local search with best improvement over one-edit neighbours and random restarts.

After White, Nolen, Ravi & Wu, "Exploring the Loss Landscape in Neural Architecture
Search" (UAI 2021), which found this simple method state of the art on NAS-Bench-201.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pydantic import Field

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Strategy
from autoplat.core.space import Categorical, Dimension, IntRange, ParamsKey, params_key


class LocalSearch(Strategy):
    """Hill climbing on the one-edit neighbourhood, restarting at local optima.

    It starts from a random sample, evaluates all its neighbours (params that differ in
    one dimension: every other choice of a categorical, the next step up or down of an
    int range, one fresh draw of a float or log range), moves to the best neighbour when
    it beats the current point and otherwise restarts from a new random sample. Points
    already evaluated are not asked again: their known value is reused. ``max_neighbours``
    evaluates a random subset of large neighbourhoods. Asks that arrive while the
    neighbourhood's last results are still pending get random samples, so concurrent
    trials never stall; their results are kept and reused when they turn up as neighbours.
    The first result told while there is no current point becomes the (re)start.
    """

    name = "local"

    class Options(BaseOptions):
        max_neighbours: int | None = Field(
            None, ge=1, description="evaluate at most this many neighbours per step (None: all)"
        )

    options: Options

    def setup(self) -> None:
        self.values: dict[ParamsKey, float | None] = {}  # every told result
        self.center: dict[str, Any] | None = None
        self._queue: list[dict[str, Any]] = []  # neighbours still to ask
        self._neighbours: list[ParamsKey] = []  # the current neighbourhood
        self._asked: set[ParamsKey] = set()

    def ask(self) -> dict[str, Any]:
        """The next unevaluated neighbour, or a random sample (a start, or while waiting)."""
        params = (
            self._queue.pop(0) if self._queue else self.space.fresh_sample(self.rng, self._asked)
        )
        self._asked.add(params_key(params))
        return params

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Record the result; step or restart once the whole neighbourhood is known."""
        key = params_key(params)
        self.values[key] = None if value is None or math.isnan(value) else value
        if self.center is None and self.values[key] is not None:
            self._move_to(dict(params))
        self._step_when_done()

    def replay(self, history: Iterable[tuple[dict[str, Any], float | None]]) -> None:
        """Tell the past results in order without asking (nothing is left pending)."""
        for params, value in history:
            self.tell(params, value)

    def _step_when_done(self) -> None:
        while self.center is not None and all(k in self.values for k in self._neighbours):
            best, best_value = None, self.values[params_key(self.center)]
            for k in self._neighbours:
                value = self.values[k]
                if value is not None and (best_value is None or self.better(value, best_value)):
                    best, best_value = k, value
            if best is None:  # a local optimum: restart with the next ask
                self.center, self._queue, self._neighbours = None, [], []
            else:
                self._move_to(dict(best))

    def _move_to(self, center: dict[str, Any]) -> None:
        """Make ``center`` current and queue its neighbours that were never evaluated."""
        self.center = {key: center[key] for key in self.space.dims}
        neighbours = self._one_edit(self.center)
        if (
            self.options.max_neighbours is not None
            and len(neighbours) > self.options.max_neighbours
        ):
            neighbours = self.rng.sample(neighbours, self.options.max_neighbours)
        self._neighbours = [params_key(n) for n in neighbours]
        seen = self._asked | self.values.keys()
        self._queue = [n for n in neighbours if params_key(n) not in seen]

    def _one_edit(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        neighbours = []
        for name, dim in self.space.searchable().items():
            for value in self._edits(dim, params[name]):
                neighbours.append({**params, name: value})
        return neighbours

    def _edits(self, dim: Dimension, value: Any) -> list[Any]:
        if isinstance(dim, Categorical):
            return [c for c in dim.choices if c != value]
        if isinstance(dim, IntRange) and not dim.log:
            return [v for v in (value - dim.step, value + dim.step) if dim.low <= v <= dim.high]
        other = dim.mutate(value, self.rng)
        return [other] if other != value else []
