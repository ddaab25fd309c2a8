"""``mode``: data experts by two-step clustering of caption embeddings (Ma et al., 2024,
"MoDE: CLIP data experts via clustering"), as its reference code does (MetaCLIP,
apps/mode: ``prep_hrchy.py``, ``prep_inference.py``, ``post_report_ensemble.py``).

Fine-grained balanced k-means (Euclidean, on unit caption embeddings; ``fine_clusters``),
then balanced k-means over the fine centers (``experts`` coarse clusters; each fine center
goes to an expert by the balanced assignment, as the reference's ``predict`` does). Each
record gets its nearest ``fine_cluster`` and its ``expert`` (that fine cluster's expert),
so one model per expert can be trained on its records. Balanced k-means: Lloyd iterations
whose assignment step gives every cluster at most ``ceil(n / k)`` points (an exact
capacity-constrained assignment by ``scipy.optimize.linear_sum_assignment``, the solver
the reference's balanced k-means names as its alternative to its auction), from k-means++
seeds, ``restarts`` times, the lowest inertia kept; it is fitted on at most
``kmeans_sample`` rows (the paper fits on a sample too; the assignment costs about
``rows^3``: 2,048 rows take about a second an iteration), then every record goes to its
nearest center.

Ensemble weights for a task (``weighting``):

- ``"paper"`` (default), ``post_report_ensemble.py``: each class name (embedded with
  ``class_template``, unit length) goes to its nearest fine center, at Euclidean distance
  ``d_c``; expert ``e`` scores ``s_e = sum_{c -> e} exp((a - d_c) * m)`` over the classes
  whose nearest fine center is in ``e`` (0 when none), with ``a = exp(0.5 - sqrt(C))`` for
  ``C < 10`` classes (else 0) and ``m = 5 log10(max(10, C - 200))``; the weights are
  ``softmax(s / 8)``.
- ``"coarse-softmax"`` (this project's earlier rule): ``softmax(sum_c cos(class_c,
  center_e) / temperature)`` over the expert centers.

With ``task_classes = [...]`` the summary holds the weights; it always holds what a later
study needs to weight a task (the fine and expert centers, ``fine_to_expert``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from autoplat.core.curation import state_array
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import Chunk, Options
from autoplat.plugins.scorers.embedding.common import (
    EmbeddingScorer,
    IdLookup,
    assign,
    batches,
    in_range,
    kmeans_pp,
    sample_rows,
    unit,
)

PAPER_SHARPEN = 5.0  # post_report_ensemble.py: smooth_weight[0]
PAPER_TEMPERATURE = 8.0  # smooth_weight[1]
PAPER_TOO_MANY_CLASSES = 200  # too_many_class


def expert_weights(
    centers: np.ndarray, class_embeddings: np.ndarray, temperature: float = 0.05
) -> np.ndarray:
    """The ``"coarse-softmax"`` rule: ``softmax(sum_c cos(class_c, center_e) /
    temperature)`` over experts ``e``; sums to one.

    ``centers``: ``(experts, d)``; ``class_embeddings``: ``(classes, d)`` (the task's
    class names, embedded with the embedder the experts were clustered with).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    centers = unit(np.asarray(centers, dtype=np.float64))
    classes = unit(np.asarray(class_embeddings, dtype=np.float64))
    logits = (classes @ centers.T).astype(np.float64).sum(axis=0) / temperature
    return softmax(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def paper_weights(
    fine_centers: np.ndarray, fine_to_expert: np.ndarray, class_embeddings: np.ndarray
) -> np.ndarray:
    """MoDE's ensemble weights (``post_report_ensemble.py``), see the module docstring."""
    fine_centers = np.asarray(fine_centers, dtype=np.float64)
    classes = unit(np.asarray(class_embeddings, dtype=np.float64))
    fine_to_expert = np.asarray(fine_to_expert)
    d = np.sqrt(np.maximum(sq_dist(classes, fine_centers), 0))
    nearest, dist = d.argmin(axis=1), d.min(axis=1)
    n = len(classes)
    add = np.exp(0.5 - np.sqrt(n)) if n < 10 else 0.0
    mul = PAPER_SHARPEN * np.log10(max(10, n - PAPER_TOO_MANY_CLASSES))
    scores = np.zeros(int(fine_to_expert.max()) + 1)
    np.add.at(scores, fine_to_expert[nearest], np.exp((add - dist) * mul))
    return softmax(scores / PAPER_TEMPERATURE)


def task_weights(summary: dict[str, Any], class_embeddings: np.ndarray) -> np.ndarray:
    """The weights of a mode scorer's experts (its ``summary()``) for these classes."""
    if summary.get("weighting", "coarse-softmax") == "paper":
        return paper_weights(
            np.asarray(summary["fine_centers"]),
            np.asarray(summary["fine_to_expert"]),
            class_embeddings,
        )
    centers = np.asarray(summary["expert_centers"])
    return expert_weights(centers, class_embeddings, float(summary["temperature"]))


def sq_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared Euclidean distances."""
    return (x * x).sum(1)[:, None] + (centers * centers).sum(1)[None] - 2 * x @ centers.T


def balanced_assign(d2: np.ndarray) -> np.ndarray:
    """Labels minimising the summed ``d2`` with at most ``ceil(n / k)`` rows a cluster."""
    from scipy.optimize import linear_sum_assignment

    n, k = d2.shape
    cap = -(-n // k)
    rows, cols = linear_sum_assignment(np.repeat(d2, cap, axis=1))
    labels = np.empty(n, dtype=np.int64)
    labels[rows] = cols // cap
    return labels


def balanced_kmeans(
    x: np.ndarray, k: int, seed: int, niter: int = 20, restarts: int = 3, sample: int = 2048
) -> tuple[np.ndarray, float]:
    """Centers ``(min(k, n), d)`` and inertia of balanced k-means on at most ``sample``
    rows of ``x``: the best of ``restarts`` k-means++ starts (lowest summed squared
    distance under the balanced assignment)."""
    train = sample_rows(x, sample, seed).astype(np.float64)
    k = min(k, len(train))
    if k == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float32), 0.0
    best: tuple[np.ndarray, float] | None = None
    for start in range(restarts):
        centers, inertia = _balanced_lloyd(train, kmeans_pp(train, k, seed + 7919 * start), niter)
        if best is None or inertia < best[1]:
            best = (centers, inertia)
    assert best is not None
    return best[0].astype(np.float32), best[1]


def _balanced_lloyd(x: np.ndarray, centers: np.ndarray, niter: int) -> tuple[np.ndarray, float]:
    centers = centers.astype(np.float64)
    labels = np.full(len(x), -1)
    for _ in range(niter):
        new = balanced_assign(sq_dist(x, centers))
        if np.array_equal(new, labels):
            break
        labels = new
        for c in np.unique(labels):  # an empty cluster keeps its center
            centers[c] = x[labels == c].mean(axis=0)
    d2 = sq_dist(x, centers)
    return centers, float(d2[np.arange(len(x)), labels].sum())


class MoDE(EmbeddingScorer):
    """Assigns each record to a data expert (coarse cluster) and a fine cluster."""

    name = "mode"

    class Options(Options):
        fine_clusters: int = Field(
            64, ge=1, le=1_000_000, description="fine-grained k-means clusters"
        )
        experts: int = Field(
            4, ge=1, le=10_000, description="coarse clusters over the fine centers"
        )
        niter: int = Field(50, ge=1, le=10_000, description="k-means iterations at most")
        restarts: int = Field(3, ge=1, le=100, description="k-means starts; best inertia kept")
        kmeans_sample: int = Field(
            2048, ge=1, le=8192, description="rows the fine k-means is fitted on"
        )
        weighting: Literal["paper", "coarse-softmax"] = "paper"
        temperature: float = Field(0.05, gt=0, description="coarse-softmax temperature")
        task_classes: list[str] | None = None
        class_template: str = Field("{}", description='e.g. "a photo of a {}."')

    def __init__(self, options: Options, seed: int = 0) -> None:
        super().__init__(options, seed)
        if "{}" not in options.class_template:
            raise ConfigError(
                f"scorer 'mode': class_template '{options.class_template}' has no '{{}}' for "
                'the class name; e.g. class_template = "a photo of a {}."'
            )
        if options.experts > options.fine_clusters:
            raise ConfigError(
                f"scorer 'mode': experts = {options.experts} exceeds fine_clusters = "
                f"{options.fine_clusters} (experts cluster the fine centers); lower experts "
                "or raise fine_clusters"
            )
        self.lookup: IdLookup | None = None
        self.fine = np.zeros(0, dtype=np.int64)
        self.fine_centers = np.zeros((0, 0), dtype=np.float32)
        self.centers = np.zeros((0, 0), dtype=np.float32)
        self.fine_to_expert = np.zeros(0, dtype=np.int64)
        self._weights: np.ndarray | None = None

    def finish_fit(self) -> None:
        assert self.store is not None, "setup() first"
        ids, x = self.store.open()
        o = self.options
        self.lookup = IdLookup(ids)
        train = unit(sample_rows(x, o.kmeans_sample, self.seed))
        fit = dict(niter=o.niter, restarts=o.restarts)
        self.fine_centers, _ = balanced_kmeans(train, o.fine_clusters, self.seed, **fit)
        self.fine = np.zeros(len(x), dtype=np.int64)
        for start, rows in batches(x):  # every record to its nearest fine center
            self.fine[start : start + len(rows)] = assign(self.fine_centers, unit(rows))[0]
        self.centers, _ = balanced_kmeans(self.fine_centers, o.experts, self.seed + 1, **fit)
        self.fine_to_expert = balanced_assign(sq_dist(self.fine_centers, self.centers))
        self._weights = None

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        assert self.lookup is not None, "finish_fit() or load_state() first"
        fine = self.fine[self.lookup(chunk.ids, self.name)]
        expert = self.fine_to_expert[fine] if len(fine) else np.zeros(0, dtype=np.int64)
        return {"expert": expert, "fine_cluster": fine}

    def weights(self, class_names: list[str]) -> np.ndarray:
        """Ensemble weights of the experts for a task with these class names."""
        if self.context is None:
            raise ConfigError("scorer 'mode': weights need an embedder; call setup() first")
        texts = [self.options.class_template.format(name) for name in class_names]
        return task_weights(self._centers_summary(), self.context.embed(texts))

    def state(self) -> Any:
        ids = self.lookup.ids if self.lookup is not None else np.zeros(0, np.int64)
        return {
            "ids": ids,
            "fine": self.fine,
            "fine_centers": self.fine_centers,
            "centers": self.centers,
            "fine_to_expert": self.fine_to_expert,
        }

    def load_state(self, state: Any) -> None:
        ids = state_array(state, "ids", "i")
        fine = state_array(state, "fine", "i", rows=len(ids))
        fine_centers = state_array(state, "fine_centers", "f", ndim=2)
        centers = state_array(state, "centers", "f", ndim=2)
        fine_to_expert = state_array(state, "fine_to_expert", "i", rows=len(fine_centers))
        if not (in_range(fine, len(fine_centers)) and in_range(fine_to_expert, len(centers))):
            raise ValueError("cluster numbers out of range")
        self.lookup = IdLookup(ids)
        self.fine, self.fine_centers = fine, fine_centers
        self.centers, self.fine_to_expert = centers, fine_to_expert
        self._weights = None

    def _centers_summary(self) -> dict[str, Any]:
        return {
            "weighting": self.options.weighting,
            "temperature": self.options.temperature,
            "fine_to_expert": self.fine_to_expert.tolist(),
            "fine_centers": np.round(self.fine_centers.astype(np.float64), 6).tolist(),
            "expert_centers": np.round(self.centers.astype(np.float64), 6).tolist(),
        }

    def summary(self) -> dict[str, Any]:
        if self.lookup is None:
            return {}
        experts = self.fine_to_expert[self.fine] if len(self.fine) else self.fine
        out: dict[str, Any] = {
            "experts": len(self.centers),
            "fine_clusters": len(self.fine_centers),
            "expert_sizes": np.bincount(experts, minlength=len(self.centers)).tolist(),
            **self._centers_summary(),
        }
        if self.options.task_classes and len(self.centers):
            if self._weights is None:
                self._weights = self.weights(self.options.task_classes)
            out["task_classes"] = list(self.options.task_classes)
            out["expert_weights"] = np.round(self._weights, 6).tolist()
        return out
