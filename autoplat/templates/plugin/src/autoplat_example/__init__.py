"""Example autoplat plugins: one architecture, dataset, strategy, acquisition and scorer."""

__version__ = "0.1.0"
