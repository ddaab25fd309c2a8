"""``dedup``: embedding-based near-duplicate removal, as in DINOv2's data pipeline (Oquab
et al., 2023, section 3: copy detection on embeddings, then connected components).

First pass: every embedding goes to a file in the scorer's work folder. Then each record's
``k`` most similar other records are found; pairs with cosine similarity above
``threshold`` are edges, and each connected component of the graph keeps one record, its
lowest id. ``index`` picks how: ``exact`` (the default up to 250,000 records) computes
every similarity, by tiles of the all-pairs matrix product, half of it by symmetry
(``exact_edges``: BLAS at full speed, peak memory bounded by the tile, not by n^2);
``ivf`` searches a faiss IVF index (approximate recall, exact similarities: the default
above 250,000, where all pairs cost too much); ``flat`` is faiss's exact
``IndexFlatIP`` (the same edges as ``exact``, slower). Columns: ``component`` (the
lowest id of the record's component; a record without duplicates is its own),
``max_sim`` (cosine similarity to its nearest other record, -1 when there is none) and
``keep``.

With ``against = "path"`` (and ``column``), records whose nearest item of that file (an
evaluation set) is more similar than ``against_threshold`` (default ``threshold``) are
dropped too (column ``eval_sim``); ``within = false`` turns the corpus-internal pass off.
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
    batches,
    chunk_embeddings,
    embed_file,
    ip_index,
)


def components(n: int, rows: np.ndarray, cols: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per position, the lowest id of its connected component over the edges."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph.tocsr(), directed=False)
    lowest = np.full(labels.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lowest, labels, ids)
    return lowest[labels]


def knn_edges(
    x: np.ndarray, k: int, threshold: float, index: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (position pairs) with similarity above ``threshold`` among each row's ``k``
    nearest others, and each row's largest similarity to another row (-1: none)."""
    n = len(x)
    best = np.full(n, -1.0, dtype=np.float32)
    rows, cols = [], []
    k = min(k + 1, n)  # + the record itself
    for start, batch in batches(x):
        sims, found = index.search(batch, k)
        own = np.arange(start, start + len(batch))[:, None]
        other = (found != own) & (found >= 0)
        masked = np.where(other, sims, -np.inf)
        if k > 1:
            top = masked.max(axis=1)
            best[start : start + len(batch)] = np.where(np.isfinite(top), top, -1.0)
        r, c = np.nonzero(other & (sims > threshold))
        rows.append(r + start)
        cols.append(found[r, c])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(rows).astype(np.int64), cat(cols).astype(np.int64), best


EXACT_LIMIT = 250_000  # index = "auto": exact tiles up to this many records, IVF above
TILE_ROWS = 2048  # rows x columns of one tile of the similarity matrix (64 MB of float32)
TILE_COLS = 8192


def exact_edges(x: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, ...]:
    """``knn_edges`` computed exactly: every similarity, by tiles of ``x @ x.T``.

    Similarity is symmetric, so only the tiles on and above the diagonal are computed
    (half the products): a tile gives its rows' and its columns' largest similarity to
    another row, and each pair above ``threshold`` in both directions. A tile is one
    BLAS matrix product (``TILE_ROWS`` x ``TILE_COLS``); the pairs are pruned to each
    row's ``k`` most similar whenever they outgrow ``2 k n``. Peak memory: ``x`` in RAM,
    one tile, the pairs.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    best = np.full(n, -np.inf, dtype=np.float32)
    empty = np.zeros(0, np.int64)
    pairs = [(empty, empty, np.zeros(0, np.float32))]
    size = 0
    for r0 in range(0, n, TILE_ROWS):
        block = x[r0 : r0 + TILE_ROWS]
        r1 = r0 + len(block)
        for c0 in range(r0, n, TILE_COLS):
            sims = block @ x[c0 : c0 + TILE_COLS].T
            c1 = c0 + sims.shape[1]
            if c0 < r1:  # on the diagonal: each pair once, column after row
                sims[np.arange(c0, c1)[None, :] <= np.arange(r0, r1)[:, None]] = -np.inf
            top = sims.max(axis=1)
            np.maximum(best[r0:r1], top, out=best[r0:r1])
            np.maximum(best[c0:c1], sims.max(axis=0), out=best[c0:c1])
            hit = np.flatnonzero(top > threshold)
            if len(hit):
                r, c = np.nonzero(sims[hit] > threshold)
                i, j, v = hit[r] + r0, c + c0, sims[hit[r], c]
                pairs.append((np.r_[i, j], np.r_[j, i], np.r_[v, v]))
                size += 2 * len(i)
            if size > 2 * k * n:
                pairs = [top_k(*(np.concatenate(p) for p in zip(*pairs, strict=True)), k)]
                size = len(pairs[0][0])
    rows, cols, _ = top_k(*(np.concatenate(p) for p in zip(*pairs, strict=True)), k)
    best[~np.isfinite(best)] = -1.0
    return rows, cols, best


def top_k(
    rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of each row with its ``k`` largest similarities (ties: lowest column)."""
    if not len(rows) or np.bincount(rows).max() <= k:
        return rows, cols, sims
    order = np.lexsort((cols, -sims, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    return rows[keep], cols[keep], sims[keep]


class Dedup(EmbeddingScorer):
    """Near-duplicates by cosine similarity of embeddings: one record kept per group."""

    name = "dedup"

    class Options(Options):
        k: int = Field(16, ge=1, le=1024, description="neighbours searched per record")
        threshold: float = Field(0.95, gt=-1, le=1, description="cosine above which: duplicate")
        index: Literal["auto", "exact", "flat", "ivf"] = Field(
            "auto", description="auto: exact <= 250k records, ivf above"
        )
        nlist: int | None = Field(
            None, ge=1, le=1_000_000, description="IVF cells (default ~4 sqrt(n))"
        )
        nprobe: int = Field(16, ge=1, le=1_000_000, description="IVF cells searched per query")
        within: bool = True
        against: str | None = None
        column: str = "text"
        against_threshold: float | None = Field(None, gt=-1, le=1)

    def __init__(self, options: Options | None = None, seed: int = 0) -> None:
        super().__init__(options or self.Options(), seed)
        self.lookup: IdLookup | None = None
        self.component = np.zeros(0, dtype=np.int64)
        self.max_sim = np.zeros(0, dtype=np.float32)
        self.stats: dict[str, Any] = {}
        self.eval_index: Any = None
        self.eval_count = 0
        self.eval_dropped = 0

    def setup(self, context: CurationContext) -> None:
        super().setup(context)
        if self.options.against:
            import faiss

            x = embed_file(context, self.options.against, self.options.column, self.name)
            self.eval_index = faiss.IndexFlatIP(x.shape[1])
            self.eval_index.add(x)
            self.eval_count = len(x)

    def fit(self, chunk: Chunk) -> None:
        if self.options.within:
            super().fit(chunk)

    def finish_fit(self) -> None:
        assert self.store is not None, "setup() first"
        if not self.options.within:
            return
        ids, x = self.store.open()
        o = self.options
        method = o.index
        if method == "auto":
            method = "exact" if len(x) <= EXACT_LIMIT else "ivf"
        if method == "exact":
            rows, cols, best = exact_edges(x, o.k, o.threshold)
        else:
            index = ip_index(x, method, self.seed, o.nlist, o.nprobe) if len(x) else None
            rows, cols, best = (
                knn_edges(x, o.k, o.threshold, index)
                if index is not None
                else (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
            )
            method = type(index).__name__ if index is not None else None
            del index
        self.component = components(len(ids), rows, cols, ids)
        self.max_sim = best
        self.lookup = IdLookup(ids)
        kept = int((self.component == ids).sum())
        groups = np.unique(self.component, return_counts=True)[1] if len(ids) else np.zeros(0)
        self.stats = {
            "records": len(ids),
            "kept": kept,
            "removed": len(ids) - kept,
            "duplicate_groups": int((groups > 1).sum()),
            "largest_group": int(groups.max()) if len(groups) else 0,
            "edges": len(rows),
            "index": method,
        }
        del x

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        columns: dict[str, np.ndarray] = {}
        keep = np.ones(len(chunk), dtype=bool)
        if self.options.within:
            assert self.lookup is not None, "finish_fit() or load_state() first"
            pos = self.lookup(chunk.ids, self.name)
            columns["component"] = self.component[pos]
            columns["max_sim"] = self.max_sim[pos].astype(np.float64)
            keep &= columns["component"] == np.asarray(chunk.ids, dtype=np.int64)
        if self.eval_index is not None:
            x = chunk_embeddings(chunk, self.context, self.name)
            if len(chunk):
                sims, _ = self.eval_index.search(x, 1)
                near = sims[:, 0].astype(np.float64)
            else:
                near = np.zeros(0)
            columns["eval_sim"] = near
            limit = self.options.against_threshold
            limit = self.options.threshold if limit is None else limit
            contaminated = near > limit
            self.eval_dropped += int(contaminated.sum())
            keep &= ~contaminated
        columns["keep"] = keep
        return columns

    def state(self) -> Any:
        ids = self.lookup.ids if self.lookup is not None else np.zeros(0, np.int64)
        return {
            "ids": ids,
            "component": self.component,
            "max_sim": self.max_sim,
            "stats": self.stats,
        }

    def load_state(self, state: Any) -> None:
        ids = state_array(state, "ids", "i")
        self.component = state_array(state, "component", "i", rows=len(ids))
        self.max_sim = state_array(state, "max_sim", "f", rows=len(ids))
        self.stats = state_value(state, "stats", dict)
        self.lookup = IdLookup(ids)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.options.k, "threshold": self.options.threshold}
        out.update(self.stats)
        if self.options.against:
            out["against"] = {
                "path": self.options.against,
                "items": self.eval_count,
                "dropped": self.eval_dropped,
            }
        return out
