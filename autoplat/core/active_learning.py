"""Active learning: the ``Acquisition`` interface that selects pool indices to label."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch


class Acquisition(ABC):
    """Chooses which pool examples to label next from model outputs on the pool.

    The loop computes each output named in ``needs`` once and shares it between
    acquisitions. Shapes, for a pool of N examples and C classes:

    - ``"probs"``: (N, C) class probabilities.
    - ``"mc_probs"``: (S, N, C) probabilities from S MC-dropout passes.
    - ``"embeddings"``: (N, D) penultimate-layer features.
    """

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]

    @abstractmethod
    def select(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Return up to ``k`` unique pool indices (int64, 1-D), best first.

        Fewer than ``k`` only when the pool is smaller. Deterministic for a given
        ``rng`` state; ties are broken with ``rng``, never by index order.
        """
