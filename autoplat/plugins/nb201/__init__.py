"""The NAS-Bench-201 pack: its cell, the ``nb201`` architecture (with a weight-sharing
supernet for one-shot strategies) and the ``nb201`` table benchmark.

Modules: ``cell`` (ops, edges, encodings), ``network`` (the torch cell and network),
``supernet`` (the weight-sharing supernet), ``architecture`` and ``benchmark``.
"""

from autoplat.core.hookspecs import Register, hookimpl, lazy


@hookimpl
def register_architectures(register: Register) -> None:
    """Register the NAS-Bench-201 network (imported when a study uses it)."""
    register(lazy("nb201", "autoplat.plugins.nb201.architecture:NB201"))


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the NAS-Bench-201 table."""
    register(lazy("nb201", "autoplat.plugins.nb201.benchmark:NB201Benchmark"))
