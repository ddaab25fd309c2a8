"""Grid search: the cartesian product of every dimension's grid values."""

from __future__ import annotations

import math
from typing import Any

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Strategy
from autoplat.core.space import Dimension, SpaceError


def _grid(key: str, dim: Dimension) -> list[Any]:
    """The grid values of one dimension; errors name the dimension."""
    try:
        return dim.grid()
    except SpaceError as err:
        raise SpaceError(f"'{key}': {err}") from None


class GridSearch(Strategy):
    """Enumerates the product of ``dim.grid()`` over the dimensions, each point once.

    The order is that of ``itertools.product`` over the dimensions in space order (the
    last dimension varies fastest), or a seeded shuffle of it with ``shuffle = true``.
    Float ranges cannot be enumerated: construction raises ``SpaceError`` for them.
    ``size`` is the number of grid points.
    """

    name = "grid"

    class Options(BaseOptions):
        shuffle: bool = False

    options: Options

    def setup(self) -> None:
        self._keys = list(self.space.dims)
        self._values = [_grid(key, dim) for key, dim in self.space.dims.items()]
        self.size = math.prod(len(values) for values in self._values)
        self._order: range | list[int] = range(self.size)
        if self.options.shuffle:
            self._order = list(self._order)
            self.rng.shuffle(self._order)
        self._next = 0

    def ask(self) -> dict[str, Any] | None:
        """Return the next grid point, or None once every point was proposed."""
        if self._next >= self.size:
            return None
        index = self._order[self._next]
        self._next += 1
        return self._point(index)

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Ignore the result: the grid is fixed in advance (failed points are not retried)."""

    def _point(self, index: int) -> dict[str, Any]:
        """The grid point at ``index`` in product order (mixed-radix, last key fastest)."""
        point: dict[str, Any] = {}
        for key, values in zip(reversed(self._keys), reversed(self._values), strict=True):
            index, digit = divmod(index, len(values))
            point[key] = values[digit]
        return {key: point[key] for key in self._keys}
