"""Random search: independent samples of the space."""

from __future__ import annotations

from typing import Any

from autoplat.core.interfaces import Strategy


class RandomSearch(Strategy):
    """Samples every dimension independently with the seeded generator; never runs out."""

    name = "random"

    def ask(self) -> dict[str, Any]:
        """Return a fresh sample of the space (fixed dimensions keep their value)."""
        return self.space.sample(self.rng)

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Ignore the result: random search does not learn."""
