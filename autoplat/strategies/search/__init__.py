"""First-party search strategies: random, grid, TPE and NSGA-II (Optuna), BOHB, evolution
and NAS ones."""

from autoplat.core.hookspecs import Register, hookimpl
from autoplat.strategies.search.bananas import Bananas
from autoplat.strategies.search.bohb import BOHB, TPERandom
from autoplat.strategies.search.evolution import RegularizedEvolution
from autoplat.strategies.search.grid import GridSearch
from autoplat.strategies.search.local import LocalSearch
from autoplat.strategies.search.nsga2 import NSGA2Search
from autoplat.strategies.search.random import RandomSearch
from autoplat.strategies.search.reinforce import Reinforce
from autoplat.strategies.search.tpe import TPESearch

__all__ = [
    "BOHB",
    "GridSearch",
    "RandomSearch",
    "RegularizedEvolution",
    "TPERandom",
    "TPESearch",
]


@hookimpl
def register_strategies(register: Register) -> None:
    """Register the first-party search strategies."""
    for cls in (
        RandomSearch,
        GridSearch,
        TPESearch,
        RegularizedEvolution,
        Reinforce,
        LocalSearch,
        Bananas,
        BOHB,
        NSGA2Search,
        TPERandom,
    ):
        register(cls)
