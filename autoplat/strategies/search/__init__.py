"""First-party search strategies: random, grid, TPE (Optuna) and regularized evolution."""

from autoplat.core.hookspecs import Register, hookimpl
from autoplat.strategies.search.evolution import RegularizedEvolution
from autoplat.strategies.search.grid import GridSearch
from autoplat.strategies.search.random import RandomSearch
from autoplat.strategies.search.tpe import TPESearch

__all__ = ["GridSearch", "RandomSearch", "RegularizedEvolution", "TPESearch"]


@hookimpl
def register_strategies(register: Register) -> None:
    """Register the first-party search strategies."""
    for cls in (RandomSearch, GridSearch, TPESearch, RegularizedEvolution):
        register(cls)
