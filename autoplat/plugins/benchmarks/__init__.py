"""Tabular benchmarks: look up a trial's result instead of training it (NAS-Bench-201, ...)."""
