"""REINFORCE with a factorized categorical policy, after Williams 1992 and Zoph & Le 2017.

The NAS-RL controller reduced to one independent softmax per categorical dimension, as
in the NAS-Bench-201 baseline: each tell moves the logits along
``(reward - baseline) * grad log p(params)`` with Adam, where the baseline is an
exponential moving average of the rewards.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Strategy
from autoplat.core.space import Categorical


class Reinforce(Strategy):
    """A learned factorized policy over the categorical dimensions.

    Every categorical dimension with two or more choices gets its own logits, all zero at
    the start (a uniform policy). Int and float ranges are not learned: they are sampled
    uniformly at random, like random search does. The reward is the reported value
    (negated when minimizing); failed trials (None or NaN) do not update the policy.
    Proposals are drawn with the seeded generator, so a seed fixes the search.
    """

    name = "reinforce"

    class Options(BaseOptions):
        lr: float = Field(0.05, gt=0, description="Adam learning rate of the policy logits")
        momentum: float = Field(
            0.9, ge=0, lt=1, description="decay of the moving-average reward baseline"
        )

    options: Options

    def setup(self) -> None:
        self._dims = {
            key: dim
            for key, dim in self.space.dims.items()
            if isinstance(dim, Categorical) and len(dim.choices) > 1
        }
        self.logits = {key: np.zeros(len(dim.choices)) for key, dim in self._dims.items()}
        self._m = {key: np.zeros_like(v) for key, v in self.logits.items()}
        self._v = {key: np.zeros_like(v) for key, v in self.logits.items()}
        self._steps = 0
        self.baseline: float | None = None

    def probabilities(self, key: str) -> np.ndarray:
        """The policy's current distribution over the choices of dimension ``key``."""
        z = np.exp(self.logits[key] - self.logits[key].max())
        return z / z.sum()

    def ask(self) -> dict[str, Any]:
        """Sample every learned dimension from the policy and the others uniformly."""
        params = {}
        for key, dim in self.space.dims.items():
            if key in self._dims:
                weights = self.probabilities(key).tolist()
                params[key] = self.rng.choices(self._dims[key].choices, weights=weights)[0]
            else:
                params[key] = dim.sample(self.rng)
        return params

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Update the baseline, then take one Adam step on the policy-gradient loss."""
        if value is None or math.isnan(value):
            return
        reward = value if self.direction == "maximize" else -value
        m = self.options.momentum
        self.baseline = reward if self.baseline is None else m * self.baseline + (1 - m) * reward
        advantage = reward - self.baseline
        self._steps += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for key, dim in self._dims.items():
            chosen = np.array([c == params[key] for c in dim.choices], dtype=float)
            grad = -advantage * (chosen - self.probabilities(key))  # d(-A log p)/d logits
            self._m[key] = beta1 * self._m[key] + (1 - beta1) * grad
            self._v[key] = beta2 * self._v[key] + (1 - beta2) * grad**2
            m_hat = self._m[key] / (1 - beta1**self._steps)
            v_hat = self._v[key] / (1 - beta2**self._steps)
            self.logits[key] = self.logits[key] - self.options.lr * m_hat / (np.sqrt(v_hat) + eps)
