"""Speed and peak memory of the ``dedup`` scorer against brute-force references, on the
same synthetic embeddings with planted near-duplicates.

Data: ``n`` unit vectors in ``dim`` dimensions drawn around 1,000 centers (cosine
similarity ~0.5 within a center, ~0 across), then ``planted`` originals get 1-3 near
copies each (cosine ~0.98) that replace random rows; threshold 0.9. Each row runs the
whole thing (``n`` embeddings in, one keep flag per record out) and checks the
duplicate groups it found against the planted ones. Rows:

- ``dedup auto``: the scorer as a user runs it (``index = "auto"``: the exact tiled
  all-pairs search up to 250,000 records), its whole lifecycle (``run_scorer``: the
  first pass writes the embeddings to disk in chunks of 10,000, then ``k`` = 16 most
  similar others per record and connected components), in float32.
- ``GEMM floor``: the reference (ratio = 1): only the matrix products of the same
  tiles (``x[rows] @ x[cols].T``, 2,048 x 8,192), nothing kept, ``x`` already in RAM:
  what any exact all-pairs method must at least spend. Target: ``dedup auto`` <= 1.2x.
- ``dedup ivf``: a faiss IVF index (``nlist`` ~4 sqrt(n) cells, 16 probed): approximate
  recall, exact similarities.
- ``dedup flat``: faiss's exact ``IndexFlatIP`` kNN (the scorer's old default).
- ``numpy blockwise``: ``X[block] @ X.T`` for blocks of 1,024 rows, every pair above the
  threshold an edge, scipy connected components (exact, all pairs): what a user writes.
- ``sklearn NearestNeighbors``: brute-force cosine kNN (``k`` + 1), the same edges and
  components; ``--quick`` only (at 100,000 rows it runs for ~25 minutes).

``--methods`` runs a subset (the floor always runs). Peak memory is the largest
resident-set size above the one before the row, sampled every 2 ms by a thread
(psutil), so it counts faiss's and BLAS's C allocations as well as numpy's; the input
array itself (n x dim float32) is allocated before and not counted. Usage::

    python benchmarks/dedup_speed.py            # 100,000 x 384: 10-15 minutes on 2 CPUs
    python benchmarks/dedup_speed.py --quick    # 20,000 x 384: about a minute
    python benchmarks/dedup_speed.py --json dedup_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLD = 0.9
K = 16
TARGET = 1.2  # dedup auto's time over the GEMM floor's (issue 21)


@dataclass(frozen=True)
class Setting:
    n: int
    dim: int
    planted: int  # originals that get near copies
    chunk: int


FULL = Setting(100_000, 384, 5_000, 10_000)
QUICK = Setting(20_000, 384, 1_000, 5_000)


def make_data(s: Setting, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows and the planted group of each row (its lowest row number)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1_000, s.dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(1_000, size=s.n)]
    x += rng.standard_normal(x.shape, dtype=np.float32) / np.sqrt(s.dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    group = np.arange(s.n)
    rows = rng.permutation(s.n)
    originals, free = rows[: s.planted], list(rows[s.planted :])
    for original in originals:
        for _ in range(rng.integers(1, 4)):
            copy = free.pop()
            noisy = x[original] + 0.2 * rng.standard_normal(s.dim, dtype=np.float32) / np.sqrt(
                s.dim
            )
            x[copy] = noisy / np.linalg.norm(noisy)
            group[copy] = original
    # the group's label: its lowest row number
    lowest = np.full(s.n, s.n, dtype=np.int64)
    np.minimum.at(lowest, group, np.arange(s.n))
    return np.ascontiguousarray(x), lowest[group]


class PeakRSS:
    """The peak resident-set size above the starting one while in the block, in MB."""

    def __init__(self, every: float = 0.002) -> None:
        import psutil

        self.process = psutil.Process()
        self.every = every
        self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every)

    def __exit__(self, *exc: Any) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20


def components_from_edges(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The lowest row number of each row's connected component."""
    from autoplat.plugins.scorers.embedding.dedup import components

    return components(n, rows, cols, np.arange(n))


def ours(x: np.ndarray, s: Setting, index: str) -> np.ndarray:
    """The dedup scorer's whole lifecycle over chunks: the component of every row."""
    from autoplat.core.curation import bare_context, run_scorer
    from autoplat.core.interfaces import Chunk
    from autoplat.plugins.scorers.embedding.dedup import Dedup

    chunks = [
        Chunk(ids=np.arange(i, min(i + s.chunk, s.n)), embeddings=x[i : i + s.chunk])
        for i in range(0, s.n, s.chunk)
    ]
    with tempfile.TemporaryDirectory() as work:
        scorer = Dedup(Dedup.Options(k=K, threshold=THRESHOLD, index=index), seed=0)
        return run_scorer(scorer, chunks, bare_context(Path(work)))["component"]


def numpy_blockwise(x: np.ndarray, block: int = 1_024) -> np.ndarray:
    """All pairs above the threshold by blocks of exact cosine similarities."""
    rows, cols = [], []
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        r, c = np.nonzero(sims > THRESHOLD)
        r += start
        other = r != c
        rows.append(r[other])
        cols.append(c[other])
    return components_from_edges(len(x), np.concatenate(rows), np.concatenate(cols))


def sklearn_knn(x: np.ndarray) -> np.ndarray:
    """scikit-learn's brute-force cosine kNN, the same edges as ours."""
    from sklearn.neighbors import NearestNeighbors

    dist, found = NearestNeighbors(n_neighbors=K + 1, metric="cosine").fit(x).kneighbors(x)
    own = np.arange(len(x))[:, None]
    r, c = np.nonzero((found != own) & (1 - dist > THRESHOLD))
    return components_from_edges(len(x), r, found[r, c])


def check(found: np.ndarray, planted: np.ndarray) -> str:
    """How the found groups compare with the planted ones."""
    if np.array_equal(found, planted):
        return f"exact ({int((planted != np.arange(len(planted))).sum()):,} copies)"
    copies = planted != np.arange(len(planted))
    hit = (found[copies] == found[planted[copies]]).sum()
    extra = ((found != np.arange(len(found))) & ~copies).sum()
    return f"{hit:,}/{copies.sum():,} copies found, {extra:,} false"


def measure(name: str, fn: Callable[[], np.ndarray], planted: np.ndarray) -> dict[str, Any]:
    with PeakRSS() as rss:
        start = time.perf_counter()
        found = fn()
        seconds = time.perf_counter() - start
    return {
        "method": name,
        "seconds": round(seconds, 2),
        "records_per_s": round(len(planted) / seconds),
        "peak_mb": round(rss.mb, 1),
        "groups": check(found, planted),
    }


def gemm_floor(x: np.ndarray) -> np.ndarray:
    """The matrix products of the exact path's tiles and nothing else (no groups)."""
    from autoplat.plugins.scorers.embedding.dedup import TILE_COLS, TILE_ROWS

    for r0 in range(0, len(x), TILE_ROWS):
        block = x[r0 : r0 + TILE_ROWS]
        for c0 in range(0, len(x), TILE_COLS):
            block @ x[c0 : c0 + TILE_COLS].T
    return np.arange(len(x))


METHODS = ("auto", "ivf", "flat", "numpy", "sklearn")


def run(
    quick: bool = False,
    log: Callable[[str], None] | None = None,
    methods: tuple[str, ...] = METHODS,
) -> list[dict[str, Any]]:
    """Every row of the table (see the module docstring); ratios against the GEMM floor."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    s = QUICK if quick else FULL
    x, planted = make_data(s)
    setting = f"{s.n:,} x {s.dim}, k={K}, threshold {THRESHOLD}"
    ours(x[:2_000], Setting(2_000, s.dim, 0, 1_000), "flat")  # warm-up: imports, threads
    rows = []
    every = [
        ("auto", "dedup auto (exact tiles)", lambda: ours(x, s, "auto")),
        ("floor", "GEMM floor (reference)", lambda: gemm_floor(x)),
        ("ivf", "dedup ivf", lambda: ours(x, s, "ivf")),
        ("flat", "dedup flat (faiss IndexFlatIP)", lambda: ours(x, s, "flat")),
        ("numpy", "numpy blockwise all-pairs", lambda: numpy_blockwise(x)),
    ]
    if quick:  # at 100,000 rows it takes ~25 minutes and ~8 GB on 2 CPUs
        every.append(("sklearn", "sklearn NearestNeighbors", lambda: sklearn_knn(x)))
    for key, name, fn in every:
        if key != "floor" and key not in methods:
            continue
        log(f"{name} ...")
        row = {"setting": setting, **measure(name, fn, planted)}
        if key == "floor":
            row["groups"] = "(none: products only)"
        rows.append(row)
    ref = next(r for r in rows if r["method"].startswith("GEMM floor"))
    for r in rows:
        r["vs_floor"] = f"{r['seconds'] / ref['seconds']:.2f}x"
        if r["method"].startswith("dedup auto"):
            ok = r["seconds"] <= TARGET * ref["seconds"] and r["groups"].startswith("exact")
            r["target"] = "PASS" if ok else "FAIL"
        else:
            r["target"] = ""
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows, about a minute")
    parser.add_argument("--threads", type=int, help="threads for faiss and BLAS (default: own)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="rows to run"
    )
    args = parser.parse_args(argv)
    import faiss

    if args.threads:
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(args.threads)
        threadpool_limits(args.threads)
    load_before = os.getloadavg()[0]
    rows = run(args.quick, methods=tuple(args.methods))
    load = (load_before, os.getloadavg()[0])
    print_table(rows)
    print(
        f"\nfaiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, numpy "
        f"{np.__version__}; load average {load[0]:.1f} -> {load[1]:.1f}; vs_floor = row s / "
        f"GEMM floor s (target for dedup auto: <= {TARGET:g}x, groups exact); peak = RSS "
        "above the start of the row"
    )
    if args.json:
        payload = {
            "setting": asdict(QUICK if args.quick else FULL),
            "quick": args.quick,
            "threads": faiss.omp_get_max_threads(),
            "load_average": load,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
