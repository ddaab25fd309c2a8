"""``balanced``: balanced sampling from hierarchical k-means with resampling (Vo et al.,
2024, "Automatic data curation for self-supervised learning: a clustering-based
approach").

Web corpora over-represent a few concepts; k-means on them spends most centroids on the
dense modes. Hierarchical k-means with resampling moves centroids toward a uniform cover
of the data's support: level 1 clusters the embeddings into ``levels[0]`` clusters, level
2 clusters level 1's centroids into ``levels[1]``, and so on; after each level's k-means,
``resample_steps`` times, the ``resample_points`` records closest to each centroid (half
the mean cluster size by default) are clustered again and every point is reassigned.

Sampling goes top-down to ``target`` records: at each level the budget is split evenly
over the clusters, a cluster smaller than its share gives the rest to the others (water
filling); within a leaf (level 1) cluster the records are drawn at random (seeded, per
record id) or the closest to the centroid (``sample = "closest"``). Columns: ``keep``,
``cluster`` (the leaf), ``top`` (the top-level cluster).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from autoplat.core.curation import record_uniform, state_array, state_value
from autoplat.core.interfaces import Chunk, Options
from autoplat.plugins.scorers.embedding.common import (
    EmbeddingScorer,
    IdLookup,
    assign,
    kmeans,
)


def split_budget(budget: int, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split ``budget`` over groups of ``sizes`` as evenly as their sizes allow.

    Water filling: every group gets ``min(size, t)`` for the largest integer level ``t``
    that fits; what is left (fewer than the groups above ``t``) goes one each to groups
    still above ``t``, chosen at random. All of ``sizes`` when the budget covers them.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget >= sizes.sum():
        return sizes.copy()
    low, high = 0, int(sizes.max())  # sum(min(sizes, low)) <= budget < sum(min(sizes, high))
    while high - low > 1:
        mid = (low + high) // 2
        if np.minimum(sizes, mid).sum() <= budget:
            low = mid
        else:
            high = mid
    share = np.minimum(sizes, low)
    left = budget - int(share.sum())
    if left:
        open_ = np.flatnonzero(sizes > low)
        share[rng.choice(open_, size=left, replace=False)] += 1
    return share


def closest_per_cluster(labels: np.ndarray, dist: np.ndarray, k: int, count: int) -> np.ndarray:
    """Positions of the ``count`` points closest to their centroid in each of ``k`` clusters."""
    order = np.lexsort((np.arange(len(labels)), dist, labels))  # by cluster, then distance
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, np.arange(k))
    rank = np.arange(len(order)) - starts[sorted_labels]
    return np.sort(order[rank < count])


class Balanced(EmbeddingScorer):
    """A ``target``-sized sample balanced over a hierarchy of k-means clusters."""

    name = "balanced"

    class Options(Options):
        target: int = Field(ge=0, description="records to keep")
        levels: list[int] = Field([100, 10], description="clusters per level, bottom up")
        resample_steps: int = Field(3, ge=0, description="resampling-clustering steps per level")
        resample_points: list[Annotated[int, Field(ge=1)]] | None = Field(
            None, description="points per cluster in resampling, per level (default ~n/k/2)"
        )
        niter: int = Field(20, ge=1, le=10_000, description="k-means iterations")
        sample: Literal["random", "closest"] = "random"
        init: Literal["kmeans++", "random"] = "kmeans++"

        @field_validator("levels")
        @classmethod
        def _levels(cls, value: list[int]) -> list[int]:
            if not value or any(not 1 <= k <= 1_000_000 for k in value):
                raise ValueError(
                    "levels must list at least one cluster count, each in [1, 1000000]"
                )
            return value

    def __init__(self, options: Options, seed: int = 0) -> None:
        super().__init__(options, seed)
        if options.resample_points is not None and len(options.resample_points) != len(
            options.levels
        ):
            from autoplat.core.errors import ConfigError

            raise ConfigError(
                f"scorer 'balanced': resample_points has {len(options.resample_points)} "
                f"entries but levels has {len(options.levels)}; give one per level"
            )
        self.lookup: IdLookup | None = None
        self.keep = np.zeros(0, dtype=bool)
        self.leaf = np.zeros(0, dtype=np.int64)
        self.top = np.zeros(0, dtype=np.int64)
        self.stats: dict[str, Any] = {}

    # -- clustering ------------------------------------------------------------------
    def _level(self, x: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One level: k-means and resampling steps; centroids, labels, distances."""
        o = self.options
        k = min(o.levels[level], len(x))
        seed = self.seed * 1009 + level * 101
        centroids = kmeans(x, k, seed, o.niter, init=o.init)
        labels, dist = assign(centroids, x)
        if o.resample_points is not None:
            count = o.resample_points[level]
        else:
            count = max(1, len(x) // max(k, 1) // 2)
        for step in range(o.resample_steps if count > 1 else 0):
            picked = closest_per_cluster(labels, dist, len(centroids), count)
            if len(picked) > k * 256:  # what k-means trains on: read only those rows
                rng = np.random.default_rng([seed, step])
                picked = np.sort(rng.choice(picked, size=k * 256, replace=False))
            sample = np.ascontiguousarray(x[picked], dtype=np.float32)
            centroids = kmeans(sample, k, seed + step + 1, o.niter, init=o.init)
            labels, dist = assign(centroids, x)
        return centroids, labels, dist

    def finish_fit(self) -> None:
        assert self.store is not None, "setup() first"
        ids, x = self.store.open()
        n = len(ids)
        self.lookup = IdLookup(ids)
        self.keep = np.zeros(n, dtype=bool)
        self.leaf = np.zeros(n, dtype=np.int64)
        self.top = np.zeros(n, dtype=np.int64)
        if n == 0:
            self.stats = {"records": 0, "kept": 0}
            return
        # parents[t][c]: the level t+1 cluster of level t cluster c
        leaf_dist = np.zeros(n, dtype=np.float32)
        parents: list[np.ndarray] = []
        level_x: np.ndarray = x
        clusters = []
        for level in range(len(self.options.levels)):
            centroids, labels, dist = self._level(level_x, level)
            if level == 0:
                self.leaf, leaf_dist = labels, dist
            else:
                parents.append(labels)
            clusters.append(len(centroids))
            level_x = centroids
        # sizes of each cluster at each level, in records
        sizes = [np.bincount(self.leaf, minlength=clusters[0])]
        path = self.leaf
        for t, parent in enumerate(parents):
            path = parent[path]
            sizes.append(np.bincount(path, minlength=clusters[t + 1]))
        self.top = path
        rng = np.random.default_rng([self.seed, 0xBA1])
        budget = {0: min(self.options.target, n)}  # top-level: one virtual root
        top_level = len(clusters) - 1
        # budgets per cluster, top-down
        share = split_budget(budget[0], sizes[top_level], rng)
        for t in range(top_level, 0, -1):
            child_share = np.zeros(clusters[t - 1], dtype=np.int64)
            parent = parents[t - 1]
            by_parent = np.argsort(parent, kind="stable")
            bounds = np.searchsorted(parent[by_parent], np.arange(clusters[t] + 1))
            for c in np.flatnonzero(share):
                children = by_parent[bounds[c] : bounds[c + 1]]
                child_share[children] = split_budget(share[c], sizes[t - 1][children], rng)
            share = child_share
        # within leaves: the lowest per-record draws (or the closest to the centroid)
        if self.options.sample == "random":
            with np.errstate(over="ignore"):  # the hash wraps around on purpose
                key = record_uniform(self.seed, ids)
        else:
            key = leaf_dist.astype(np.float64)
        order = np.lexsort((ids, key, self.leaf))
        starts = np.searchsorted(self.leaf[order], np.arange(clusters[0]))
        rank = np.arange(n) - starts[self.leaf[order]]
        self.keep[order] = rank < share[self.leaf[order]]
        leaf_sizes = sizes[0]
        kept_sizes = np.bincount(self.leaf[self.keep], minlength=clusters[0])
        self.stats = {
            "records": n,
            "kept": int(self.keep.sum()),
            "target": self.options.target,
            "clusters": clusters,
            "largest_leaf_share_before": round(float(leaf_sizes.max() / n), 6),
            "largest_leaf_share_after": round(
                float(kept_sizes.max() / max(1, kept_sizes.sum())), 6
            ),
        }

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        assert self.lookup is not None, "finish_fit() or load_state() first"
        pos = self.lookup(chunk.ids, self.name)
        return {"cluster": self.leaf[pos], "top": self.top[pos], "keep": self.keep[pos]}

    def state(self) -> Any:
        ids = self.lookup.ids if self.lookup is not None else np.zeros(0, np.int64)
        return {
            "ids": ids,
            "keep": self.keep,
            "leaf": self.leaf,
            "top": self.top,
            "stats": self.stats,
        }

    def load_state(self, state: Any) -> None:
        ids = state_array(state, "ids", "i")
        self.keep = state_array(state, "keep", "b", rows=len(ids))
        self.leaf = state_array(state, "leaf", "i", rows=len(ids))
        self.top = state_array(state, "top", "i", rows=len(ids))
        self.stats = state_value(state, "stats", dict)
        self.lookup = IdLookup(ids)

    def summary(self) -> dict[str, Any]:
        return dict(self.stats)
