"""``mode``: data experts by two-step clustering of caption embeddings (Ma et al., 2024,
"MoDE: CLIP data experts via clustering").

Fine-grained spherical k-means on the caption embeddings (``fine_clusters``), then
k-means over the fine centers (``experts`` coarse clusters): each record gets its
``fine_cluster`` and its ``expert`` (the coarse cluster of its fine cluster), so one
model per expert can be trained on its records. At inference the experts are ensembled
with weights from the task's class names: ``expert_weights`` (a softmax, over experts, of
the class names' summed cosine similarity to each expert center, divided by
``temperature``). With ``task_classes = [...]`` the summary holds those weights; it
always holds the expert centers (``expert_centers``, unit rows) and which expert each
fine cluster belongs to, for a later study to route with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from autoplat.core.curation import Chunk, state_array
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import Options
from autoplat.plugins.scorers.embedding.common import (
    EmbeddingScorer,
    IdLookup,
    assign,
    in_range,
    kmeans,
    unit,
)


def expert_weights(
    centers: np.ndarray, class_embeddings: np.ndarray, temperature: float = 0.05
) -> np.ndarray:
    """Ensemble weights of the experts for a task: ``softmax(sum_c cos(class_c,
    center_e) / temperature)`` over experts ``e``; sums to one.

    ``centers``: ``(experts, d)``; ``class_embeddings``: ``(classes, d)`` (the task's
    class names, embedded with the embedder the experts were clustered with).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    centers = unit(np.asarray(centers, dtype=np.float64))
    classes = unit(np.asarray(class_embeddings, dtype=np.float64))
    logits = (classes @ centers.T).astype(np.float64).sum(axis=0) / temperature
    logits -= logits.max()
    weights = np.exp(logits)
    return weights / weights.sum()


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
        niter: int = Field(20, ge=1, le=10_000, description="k-means iterations")
        temperature: float = Field(0.05, gt=0, description="softmax temperature of weights")
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
        self.fine_centers = kmeans(
            x, o.fine_clusters, self.seed, o.niter, spherical=True, init="kmeans++"
        )
        self.fine, _ = assign(self.fine_centers, x)
        coarse = kmeans(
            self.fine_centers, o.experts, self.seed + 1, o.niter, spherical=True, init="kmeans++"
        )
        self.fine_to_expert, _ = assign(coarse, self.fine_centers)
        self.centers = unit(coarse)
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
        return expert_weights(self.centers, self.context.embed(texts), self.options.temperature)

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

    def summary(self) -> dict[str, Any]:
        if self.lookup is None:
            return {}
        experts = self.fine_to_expert[self.fine] if len(self.fine) else self.fine
        out: dict[str, Any] = {
            "experts": len(self.centers),
            "fine_clusters": len(self.fine_centers),
            "expert_sizes": np.bincount(experts, minlength=len(self.centers)).tolist(),
            "fine_to_expert": self.fine_to_expert.tolist(),
            "expert_centers": np.round(self.centers.astype(np.float64), 6).tolist(),
            "temperature": self.options.temperature,
        }
        if self.options.task_classes and len(self.centers):
            if self._weights is None:
                self._weights = self.weights(self.options.task_classes)
            out["task_classes"] = list(self.options.task_classes)
            out["expert_weights"] = np.round(self._weights, 6).tolist()
        return out
