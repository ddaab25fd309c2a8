"""``retrieval``: keep the pool records nearest to a curated seed set, as DINOv2 builds
LVD-142M (Oquab et al., 2023, section 3: self-supervised image retrieval).

``seeds = "path"`` (and ``column``) names the seed file; its texts are embedded with the
configured embedder. Two modes:

- ``knn``: each seed retrieves its ``k`` nearest pool records (cosine, faiss); a record is
  kept when some seed retrieved it (and, with ``min_sim``, it is at least that similar).
  Columns ``rank`` (the best rank at which a seed retrieved it, 0 = nearest; -1: none)
  and ``seed`` (the first seed, in file order, that retrieved it at that rank; -1).
- ``cluster``: k-means over the pool (``clusters``, spherical, seeded); every record of
  a cluster that holds a seed is kept. Column ``cluster``.

Both give ``seed_sim``, the cosine similarity to the nearest seed.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from autoplat.core.curation import state_array, state_value
from autoplat.core.interfaces import Chunk, CurationContext, Options
from autoplat.plugins.scorers.embedding.common import (
    EmbeddingScorer,
    IdLookup,
    assign,
    chunk_embeddings,
    embed_file,
    ip_index,
    kmeans,
)


def best_ranks(found: np.ndarray, sims: np.ndarray, n: int, min_sim: float | None):
    """Per pool position, the best rank any query found it at and the first such query."""
    rank = np.full(n, -1, dtype=np.int64)
    seed = np.full(n, -1, dtype=np.int64)
    q, r = np.nonzero(found >= 0)
    if min_sim is not None:
        ok = sims[q, r] >= min_sim
        q, r = q[ok], r[ok]
    p = found[q, r]
    order = np.lexsort((q, r, p))  # by position, then rank, then query
    p, q, r = p[order], q[order], r[order]
    first = np.ones(len(p), dtype=bool)
    first[1:] = p[1:] != p[:-1]
    rank[p[first]] = r[first]
    seed[p[first]] = q[first]
    return rank, seed


class Retrieval(EmbeddingScorer):
    """Pool records near a seed set: by k nearest neighbours or by shared k-means cluster."""

    name = "retrieval"

    class Options(Options):
        seeds: str = Field(description="record file of seed queries")
        column: str = "text"
        mode: Literal["knn", "cluster"] = "knn"
        k: int = Field(4, ge=1, le=4096, description="knn: pool records per seed")
        min_sim: float | None = Field(None, ge=-1, le=1, description="knn: least similarity")
        clusters: int = Field(
            100, ge=1, le=1_000_000, description="cluster: k-means clusters over the pool"
        )
        niter: int = Field(20, ge=1, le=10_000)
        index: Literal["auto", "flat", "ivf"] = Field("auto", description="auto: flat <= 50k")
        nlist: int | None = Field(None, ge=1, le=1_000_000)
        nprobe: int = Field(16, ge=1, le=1_000_000)

    def __init__(self, options: Options, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.seed_x = np.zeros((0, 0), dtype=np.float32)
        self.seed_index: Any = None
        self.lookup: IdLookup | None = None
        self.keep = np.zeros(0, dtype=bool)
        self.extra: dict[str, np.ndarray] = {}
        self.stats: dict[str, Any] = {}

    def setup(self, context: CurationContext) -> None:
        import faiss

        super().setup(context)
        self.seed_x = embed_file(context, self.options.seeds, self.options.column, self.name)
        self.seed_index = faiss.IndexFlatIP(self.seed_x.shape[1])
        self.seed_index.add(self.seed_x)

    def finish_fit(self) -> None:
        assert self.store is not None, "setup() first"
        ids, x = self.store.open()
        o = self.options
        n = len(ids)
        self.lookup = IdLookup(ids)
        self.stats = {"records": n, "seeds": len(self.seed_x), "mode": o.mode}
        if o.mode == "knn":
            if n:
                index = ip_index(x, o.index, self.seed, o.nlist, o.nprobe)
                sims, found = index.search(self.seed_x, min(o.k, n))
            else:
                sims, found = np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64)
            rank, seed = best_ranks(found, sims, n, o.min_sim)
            self.keep = rank >= 0
            self.extra = {"rank": rank, "seed": seed}
        else:
            centroids = kmeans(x, o.clusters, self.seed, o.niter, spherical=True, init="kmeans++")
            labels, _ = assign(centroids, x)
            seed_labels, _ = assign(centroids, self.seed_x)
            chosen = np.unique(seed_labels)
            self.keep = np.isin(labels, chosen)
            self.extra = {"cluster": labels}
            self.stats |= {"clusters": len(centroids), "seed_clusters": len(chosen)}
        self.stats["kept"] = int(self.keep.sum())

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        assert self.lookup is not None, "finish_fit() or load_state() first"
        pos = self.lookup(chunk.ids, self.name)
        x = chunk_embeddings(chunk, self.context, self.name)
        if len(chunk):
            sims, _ = self.seed_index.search(x, 1)
            near = sims[:, 0].astype(np.float64)
        else:
            near = np.zeros(0)
        columns = {name: values[pos] for name, values in self.extra.items()}
        return {**columns, "seed_sim": near, "keep": self.keep[pos]}

    def state(self) -> Any:
        ids = self.lookup.ids if self.lookup is not None else np.zeros(0, np.int64)
        return {"ids": ids, "keep": self.keep, "extra": self.extra, "stats": self.stats}

    def load_state(self, state: Any) -> None:
        ids = state_array(state, "ids", "i")
        self.keep = state_array(state, "keep", "b", rows=len(ids))
        extra = state_value(state, "extra", dict)
        self.extra = {name: state_array(extra, name, "biuf", rows=len(ids)) for name in extra}
        self.stats = state_value(state, "stats", dict)
        self.lookup = IdLookup(ids)

    def summary(self) -> dict[str, Any]:
        return {"k": self.options.k, **self.stats}
