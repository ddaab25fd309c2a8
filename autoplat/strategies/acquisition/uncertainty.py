"""Uncertainty sampling on one model's class probabilities, plus the random baseline.

Each scores the pool from ``probs`` (N, C) and takes the ``k`` highest scores (higher =
more informative), equal scores in an order drawn from the generator.
"""

from __future__ import annotations

import torch

from autoplat.strategies.acquisition.base import ScoredAcquisition, entropy


class Random(ScoredAcquisition):
    """Uniformly random pool items: score 0 for all, so the order is the generator's.

    Returns ``k`` distinct indices in random order (a seeded permutation's first ``k``).
    """

    name = "random"
    needs = ("probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) zeros."""
        probs = outputs["probs"]
        return probs.new_zeros(len(probs))


class LeastConfidence(ScoredAcquisition):
    """Least confidence: maximizes ``1 - max_c p(c|x)``.

    Returns the ``k`` items whose most probable class is least probable, least first.
    """

    name = "least-confidence"
    needs = ("probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) ``1 - max_c p(c|x)``."""
        return 1 - outputs["probs"].amax(1)


class Margin(ScoredAcquisition):
    """Margin sampling: maximizes ``-(p_(1) - p_(2))``, the two largest class probabilities.

    Returns the ``k`` items with the smallest top-1 minus top-2 gap, smallest first.
    """

    name = "margin"
    needs = ("probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) ``p_(2) - p_(1)`` (<= 0)."""
        top = outputs["probs"].topk(2, dim=1).values
        return top[:, 1] - top[:, 0]


class Entropy(ScoredAcquisition):
    """Entropy sampling: maximizes ``H[p(.|x)] = -sum_c p(c|x) log p(c|x)`` (nats).

    Returns the ``k`` items with the most uncertain predictive distribution, highest first.
    """

    name = "entropy"
    needs = ("probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) predictive entropy in nats."""
        return entropy(outputs["probs"])
