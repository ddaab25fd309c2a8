"""Margin sampling: label the examples whose top two classes are closest."""

from __future__ import annotations

import torch
from autoplat.core.interfaces import Acquisition


class Margin(Acquisition):
    """Smallest gap between the two most probable classes first; ties broken by ``rng``."""

    name = "example-margin"
    needs = ("probs",)

    def select(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """The ``k`` pool indices with the smallest margins (all of them if the pool is smaller)."""
        probs = outputs["probs"]
        top = probs.topk(min(2, probs.shape[1]), dim=1).values
        margin = top[:, 0] - top[:, 1] if top.shape[1] == 2 else top[:, 0]
        shuffled = torch.randperm(len(probs), generator=rng)
        order = torch.argsort(margin[shuffled], stable=True)
        return shuffled[order[:k]]
