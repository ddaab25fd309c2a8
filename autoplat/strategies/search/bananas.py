"""BANANAS-style Bayesian optimization with a neural predictor.

After White, Neiswanger & Savani, "BANANAS: Bayesian Optimization with Neural
Architectures for Neural Architecture Search" (AAAI 2021): an ensemble of small MLPs
predicts the value of encoded params; its spread is the uncertainty; the acquisition
function is maximized over mutations of the best params seen so far.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Strategy
from autoplat.core.space import Categorical, FloatRange, IntRange, ParamsKey, params_key


def numeric_grid(dim: Any) -> bool:
    """A categorical whose choices are all numbers (not bools): an ordered grid."""
    return isinstance(dim, Categorical) and all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in dim.choices
    )


def encode(
    space_dims: dict[str, Any], params: dict[str, Any], ordinal: bool = False
) -> list[float]:
    """One-hot for categoricals, position in [0, 1] (log-scaled if log) for ranges; with
    ``ordinal``, a numeric grid is its value's rank among the sorted choices, in [0, 1]."""
    features: list[float] = []
    for key, dim in space_dims.items():
        value = params[key]
        if ordinal and numeric_grid(dim):
            ranked = sorted(dim.choices)
            features.append(ranked.index(value) / max(1, len(ranked) - 1))
        elif isinstance(dim, Categorical):
            features += [float(c == value) for c in dim.choices]
        elif isinstance(dim, IntRange | FloatRange):
            low, high, x = dim.low, dim.high, value
            if dim.log:
                low, high, x = math.log(low), math.log(high), math.log(x)
            features.append((x - low) / (high - low))
    return features


class Ensemble:
    """``size`` independent MLPs (ReLU, MSE, full-batch Adam), trained at once in numpy."""

    def __init__(
        self, size: int, features: int, hidden: int, layers: int, rng: np.random.Generator
    ) -> None:
        widths = [features] + [hidden] * layers + [1]
        shapes = [(size, i, o) for i, o in zip(widths[:-1], widths[1:], strict=True)]
        shapes += [(size, 1, o) for o in widths[1:]]
        # weights and biases are views into one flat vector, so Adam updates it in one go
        self.flat = np.zeros(sum(math.prod(shape) for shape in shapes))
        self.grad = np.zeros_like(self.flat)
        params, grads, offset = [], [], 0
        for shape in shapes:
            n = math.prod(shape)
            params.append(self.flat[offset : offset + n].reshape(shape))
            grads.append(self.grad[offset : offset + n].reshape(shape))
            offset += n
        self.weights, self.biases = params[: layers + 1], params[layers + 1 :]
        self._grad_w, self._grad_b = grads[: layers + 1], grads[layers + 1 :]
        for w in self.weights:
            w[...] = rng.uniform(-1, 1, w.shape) / math.sqrt(w.shape[1])

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        """The input of every layer, then the output, shape (size, rows, width)."""
        outputs = [np.broadcast_to(x, (len(self.weights[0]), *x.shape))]
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = outputs[-1] @ w + b
            outputs.append(np.maximum(h, 0) if i < len(self.weights) - 1 else h)
        return outputs

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions of every member for inputs (rows, features): shape (size, rows)."""
        return self._forward(x)[-1][..., 0]

    def fit(self, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> None:
        """Minimize each member's mean squared error with Adam."""
        m, v = np.zeros_like(self.flat), np.zeros_like(self.flat)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(1, steps + 1):
            outputs = self._forward(x)
            grad = 2 * (outputs[-1] - y[None, :, None]) / len(y)
            for i in reversed(range(len(self.weights))):
                np.matmul(outputs[i].transpose(0, 2, 1), grad, out=self._grad_w[i])
                grad.sum(axis=1, keepdims=True, out=self._grad_b[i])
                if i:
                    grad = (grad @ self.weights[i].transpose(0, 2, 1)) * (outputs[i] > 0)
            m *= beta1
            m += (1 - beta1) * self.grad
            v *= beta2
            v += (1 - beta2) * self.grad**2
            scale = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
            self.flat -= scale * m / (np.sqrt(v) + eps)


class Bananas(Strategy):
    """Predictor-guided search: an MLP ensemble scores mutations of the best params.

    The first ``n_init`` asks are random samples. After that each ask fits an ensemble of
    ``ensemble`` MLPs (on the standardized values of all completed trials; full-batch Adam
    for ``steps`` steps, in numpy) and proposes, among ``candidates`` one-dimension mutations
    of the ``parents`` best trials that were never asked, the one maximizing the
    acquisition: expected improvement over the best value under a normal with the
    ensemble's mean and spread per candidate (``ei``, the default: better than the paper's
    choice on NAS-Bench-201, docs/fidelity.md), or independent Thompson sampling (``its``,
    the paper's: one draw per candidate from that normal). Params are one-hot per
    categorical and a position in [0, 1] per range; a categorical of numbers (a grid) is
    its value's rank among the choices (``numeric_grids = "ordinal"``, the default) or
    one-hot. Failed trials are left out of the fit. Weight init and sampling follow the
    seed: the search is reproducible.
    """

    name = "bananas"

    class Options(BaseOptions):
        n_init: int = Field(10, ge=1, description="random trials before the predictor is used")
        ensemble: int = Field(5, ge=2, description="number of MLPs in the ensemble")
        hidden: int = Field(32, ge=1, description="width of each hidden layer")
        layers: int = Field(2, ge=1, description="number of hidden layers")
        steps: int = Field(100, ge=1, description="Adam steps per fit")
        lr: float = Field(0.01, gt=0, description="Adam learning rate")
        parents: int = Field(10, ge=1, description="how many of the best trials are mutated")
        candidates: int = Field(100, ge=1, description="mutations scored per ask")
        numeric_grids: Literal["ordinal", "onehot"] = Field(
            "ordinal",
            description="encode a categorical of numbers by its value's rank, or one-hot",
        )
        acquisition: Literal["ei", "its"] = Field(
            "ei", description="expected improvement or independent Thompson sampling"
        )

    options: Options

    def setup(self) -> None:
        self._searchable = self.space.searchable()
        self.history: list[tuple[dict[str, Any], float]] = []
        self._asked: set[ParamsKey] = set()
        self._n_asked = 0

    def ask(self) -> dict[str, Any]:
        """A random sample during warm-up, then the best candidate under the acquisition."""
        self._n_asked += 1
        if self._n_asked <= self.options.n_init or len(self.history) < 2 or not self._searchable:
            params = self.space.fresh_sample(self.rng, self._asked)
        else:
            candidates = self._candidates()
            params = (
                self._pick(candidates)
                if candidates
                else self.space.fresh_sample(self.rng, self._asked)
            )
        self._asked.add(params_key(params))
        return params

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Keep a completed trial for the next fit; failures are left out."""
        self._asked.add(params_key(params))
        if value is not None and not math.isnan(value):
            self.history.append((dict(params), value if self.direction == "maximize" else -value))

    def _candidates(self) -> list[dict[str, Any]]:
        """Never-asked one-dimension mutations of the best trials, round robin over parents."""
        ranked = sorted(self.history, key=lambda item: item[1], reverse=True)
        parents = [params for params, _ in ranked[: self.options.parents]]
        found: dict[ParamsKey, dict[str, Any]] = {}
        for i in range(self.options.candidates * 4):
            if len(found) == self.options.candidates:
                break
            child = dict(parents[i % len(parents)])
            key = self.rng.choice(list(self._searchable))
            child[key] = self._searchable[key].mutate(child[key], self.rng)
            child_key = params_key(child)
            if child_key not in self._asked:
                found[child_key] = child
        return list(found.values())

    def _pick(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """The candidate with the highest acquisition value under a freshly fitted ensemble."""
        o = self.options
        ordinal = o.numeric_grids == "ordinal"
        x = np.array([encode(self._searchable, p, ordinal) for p, _ in self.history])
        y = np.array([v for _, v in self.history])
        y = (y - y.mean()) / max(float(y.std()), 1e-8)
        rng = np.random.default_rng(self.rng.getrandbits(63))
        model = Ensemble(o.ensemble, x.shape[1], o.hidden, o.layers, rng)
        model.fit(x, y, o.steps, o.lr)
        pred = model.predict(np.array([encode(self._searchable, c, ordinal) for c in candidates]))
        mean, std = pred.mean(0), np.maximum(pred.std(0), 1e-6)
        if o.acquisition == "its":
            score = mean + std * rng.standard_normal(len(candidates))
        else:
            u = (mean - y.max()) / std
            cdf = 0.5 * (1 + np.vectorize(math.erf)(u / math.sqrt(2)))
            score = std * (u * cdf + np.exp(-0.5 * u**2) / math.sqrt(2 * math.pi))
        return candidates[int(np.argmax(score))]
