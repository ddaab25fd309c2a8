"""Tabular benchmarks: look up a trial's result instead of training it (NAS-Bench-201, ...)."""

from autoplat.core.hookspecs import Register, hookimpl
from autoplat.plugins.benchmarks.nb201 import NB201Benchmark


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the first-party tabular benchmarks."""
    register(NB201Benchmark())
