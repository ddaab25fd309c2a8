"""First-party search strategies: random, grid, TPE and NSGA-II (Optuna), BOHB, evolution
and NAS ones."""
