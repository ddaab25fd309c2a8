"""What the embedding scorers share: a disk store of the first pass's embeddings, k-means,
batched nearest-neighbour search, and reading and embedding another file (seeds, an
evaluation set).

Every result is computed from the whole corpus in file order after the first pass, and
looked up by record id when scoring, so it does not depend on how the corpus was chunked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autoplat.core.errors import ConfigError, DataError
from autoplat.core.interfaces import Chunk, CurationContext, Options, Scorer

BATCH = 8192  # query rows per search / assignment batch: bounds the (batch, k) buffers


def chunk_embeddings(chunk: Chunk, context: CurationContext | None, scorer: str) -> np.ndarray:
    """The chunk's embeddings; when the runner did not fill them, its texts embedded."""
    if chunk.embeddings is not None:
        x = np.asarray(chunk.embeddings, dtype=np.float32)
    elif chunk.text is not None and context is not None:
        x = np.asarray(context.embed(list(chunk.text)), dtype=np.float32)
    elif len(chunk) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    else:
        raise ConfigError(
            f"scorer '{scorer}' needs embeddings: add an [embedder] section to the config"
        )
    if x.ndim != 2 or len(x) != len(chunk):
        raise DataError(
            f"scorer '{scorer}': the embedder returned an array of shape {x.shape} for "
            f"{len(chunk)} records; an embedder must return one row per record"
        )
    return np.ascontiguousarray(x)


class EmbeddingScorer(Scorer):
    """A two-pass scorer whose first pass (``fit``) collects every record's embedding in an
    ``EmbeddingStore`` (``self.store``), which ``finish_fit`` reads whole."""

    needs = ("embedding",)
    two_pass = True

    def __init__(self, options: Options, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.context: CurationContext | None = None
        self.store: EmbeddingStore | None = None

    def setup(self, context: CurationContext) -> None:
        self.context = context
        self.store = EmbeddingStore(context.work_dir, f"{self.name}-embeddings")

    def fit(self, chunk: Chunk) -> None:
        assert self.store is not None, "setup() first"
        self.store.append(chunk.ids, chunk_embeddings(chunk, self.context, self.name))


class EmbeddingStore:
    """Appends each first-pass chunk's ids and embeddings to files under ``folder``.

    RAM stays at one chunk; ``open()`` maps the embeddings (float32, ``(n, dim)``, in
    the order the chunks came) and returns them with their ids.
    """

    def __init__(self, folder: Path, stem: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.vectors_path = folder / f"{stem}.f32"
        self.ids_path = folder / f"{stem}.ids"
        self.dim = 0
        self.count = 0
        self._files: tuple[Any, Any] | None = None

    def append(self, ids: np.ndarray, x: np.ndarray) -> None:
        if self._files is None:  # the first pass (re)starts: truncate what a run left
            self._files = (self.vectors_path.open("wb"), self.ids_path.open("wb"))
        if len(ids) == 0:
            return
        if self.dim and x.shape[1] != self.dim:
            raise DataError(
                f"embeddings changed width from {self.dim} to {x.shape[1]} at record "
                f"{int(ids[0])}; the embedder must return vectors of one length"
            )
        self.dim = x.shape[1]
        self._files[0].write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        self._files[1].write(np.asarray(ids, dtype=np.int64).tobytes())
        self.count += len(ids)

    def open(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, embeddings)``: ids in RAM, embeddings memory-mapped (read-only)."""
        if self._files is not None:
            for f in self._files:
                f.close()
            self._files = None
        if self.count == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, max(self.dim, 1)), np.float32)
        ids = np.fromfile(self.ids_path, dtype=np.int64)
        x = np.memmap(self.vectors_path, dtype=np.float32, mode="r", shape=(self.count, self.dim))
        if len(np.unique(ids)) != len(ids):
            raise DataError("the first pass saw a record id twice; chunk ids must be unique")
        return ids, x


class IdLookup:
    """Positions (first-pass order) of record ids."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.contiguous = bool(len(ids) == 0 or np.array_equal(ids, np.arange(len(ids))))
        if not self.contiguous:
            self.order = np.argsort(self.ids, kind="stable")
            self.sorted = self.ids[self.order]

    def __call__(self, ids: np.ndarray, scorer: str) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if self.contiguous:
            ok = (ids >= 0) & (ids < len(self.ids))
            pos = ids
        else:
            at = np.clip(np.searchsorted(self.sorted, ids), 0, max(len(self.sorted) - 1, 0))
            ok = (self.sorted[at] == ids) if len(self.sorted) else np.zeros(len(ids), bool)
            pos = self.order[at] if len(self.sorted) else ids
        if not ok.all():
            bad = int(ids[~ok][0])
            raise DataError(
                f"scorer '{scorer}': record {bad} was not in the first pass; the scoring pass "
                "must see the same records (delete the run folder to start over)"
            )
        return pos


def in_range(values: np.ndarray, n: int) -> bool:
    """Whether every value indexes an array of ``n`` items (a saved state's check)."""
    return bool(len(values) == 0 or (values.min() >= 0 and values.max() < n))


def batches(x: np.ndarray, size: int = BATCH) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows)`` of ``x`` in batches, as float32 arrays in RAM."""
    for start in range(0, len(x), size):
        yield start, np.ascontiguousarray(x[start : start + size], dtype=np.float32)


def sample_rows(x: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` rows of ``x`` (all when fewer), a seeded sorted choice, in RAM."""
    if len(x) <= limit:
        return np.ascontiguousarray(x, dtype=np.float32)
    pick = np.sort(np.random.default_rng(seed).choice(len(x), size=limit, replace=False))
    return np.ascontiguousarray(x[pick], dtype=np.float32)


def kmeans(
    x: np.ndarray,
    k: int,
    seed: int,
    niter: int = 20,
    spherical: bool = False,
    init: np.ndarray | str | None = None,
    max_points_per_centroid: int = 256,
) -> np.ndarray:
    """Centroids ``(min(k, n), d)`` of faiss k-means on ``x`` (seeded; trains on at most
    ``k * max_points_per_centroid`` rows, a seeded sample)."""
    import faiss

    k = min(k, len(x))
    if k == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float32)
    train = sample_rows(x, k * max_points_per_centroid, seed)
    km = faiss.Kmeans(
        train.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=spherical,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max_points_per_centroid,
    )
    if isinstance(init, str):
        init = kmeans_pp(train, k, seed) if init == "kmeans++" else None
    if init is not None:
        km.train(train, init_centroids=np.ascontiguousarray(init[:k], dtype=np.float32))
    else:
        km.train(train)
    return np.asarray(km.centroids, dtype=np.float32).copy()


def kmeans_pp(x: np.ndarray, k: int, seed: int, limit: int = 20_000) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007) on at most ``limit`` rows of
    ``x``: ``k`` rows, each drawn with probability proportional to its squared distance
    to the nearest row drawn before."""
    x = sample_rows(x, max(limit, k), seed)
    rng = np.random.default_rng([seed, 0xC0FFEE])
    sq = np.einsum("ij,ij->i", x, x)
    chosen = [int(rng.integers(len(x)))]
    d2 = np.maximum(sq + sq[chosen[0]] - 2 * x @ x[chosen[0]], 0)
    for _ in range(1, k):
        total = float(d2.sum())
        nxt = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        chosen.append(nxt)
        d2 = np.minimum(d2, np.maximum(sq + sq[nxt] - 2 * x @ x[nxt], 0))
    return np.ascontiguousarray(x[chosen], dtype=np.float32)


def assign(centroids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (squared L2) of every row of ``x``, in batches: labels, distances."""
    import faiss

    labels = np.zeros(len(x), dtype=np.int64)
    dist = np.zeros(len(x), dtype=np.float32)
    if len(x) == 0 or len(centroids) == 0:
        return labels, dist
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    for start, rows in batches(x):
        d, i = index.search(rows, 1)
        labels[start : start + len(rows)] = i[:, 0]
        dist[start : start + len(rows)] = d[:, 0]
    return labels, dist


def ip_index(x: np.ndarray, kind: str, seed: int, nlist: int | None, nprobe: int) -> Any:
    """A faiss inner-product index over ``x`` (rows added in batches).

    ``kind``: "flat" (exact), "ivf" (inverted lists over k-means cells; exact
    similarities, approximate recall), "auto" (flat up to 50,000 rows).
    """
    import faiss

    n, d = x.shape
    if kind == "auto":
        kind = "flat" if n <= 50_000 else "ivf"
    if kind == "flat" or n < 2:
        index = faiss.IndexFlatIP(d)
    else:
        cells = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1
        index.train(sample_rows(x, cells * 32, seed))
        index.nprobe = min(nprobe, cells)
    for _, rows in batches(x):
        index.add(rows)
    return index


def embed_file(context: CurationContext, path: str, column: str, scorer: str) -> np.ndarray:
    """Every text of ``column`` of ``path``, embedded with the context's embedder."""
    parts = []
    for texts in context.read_texts(path, column):
        if texts:
            parts.append(np.asarray(context.embed(list(texts)), dtype=np.float32))
    if not parts:
        raise DataError(
            f"scorer '{scorer}': {path} (column '{column}') holds no records; point it at "
            "a file with at least one text"
        )
    return np.ascontiguousarray(np.concatenate(parts))


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms == 0, 1, norms)).astype(np.float32)
