"""Data-quality scorers for ``platform curate``."""
