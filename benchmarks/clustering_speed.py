"""Time of the clustering acquisitions: TypiClust capped or not, Cluster-Margin's HAC.

- ``typiclust``: one ``TypiClust.select`` on 10 Gaussian blobs in 256-d, L + k clusters
  against the paper's code's cap of 500.
- ``hac``: ``hybrid.average_linkage`` (scipy average linkage) of n items into n / 10
  clusters, each size in a fresh process so that its peak memory (RSS) is its own.

Usage::

    python benchmarks/clustering_speed.py typiclust 5000 500 500    # pool, labeled, k
    python benchmarks/clustering_speed.py hac 5000 10000 20000
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import torch


def blobs(n: int, dim: int = 256, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(10, dim, generator=gen)
    return torch.randn(n, dim, generator=gen) + centers[torch.randint(0, 10, (n,), generator=gen)]


def typiclust(pool: int, labeled: int, k: int) -> None:
    from autoplat.strategies.acquisition.diversity import TypiClust

    x = blobs(pool + labeled)
    outputs = {"embeddings": x[:pool], "labeled_embeddings": x[pool:]}
    for cap in (500, None):
        start = time.perf_counter()
        TypiClust(max_clusters=cap).select(outputs, k, torch.Generator().manual_seed(0))
        clusters = min(labeled + k, cap or labeled + k)
        print(f"typiclust pool {pool} labeled {labeled} k {k}: {clusters} clusters", end=" ")
        print(f"{time.perf_counter() - start:.1f} s", flush=True)


def hac(n: int) -> None:
    from autoplat.strategies.acquisition.hybrid import average_linkage

    x = blobs(n)
    start = time.perf_counter()
    average_linkage(x, n // 10, None, n, torch.Generator())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB -> GB
    print(f"hac {n} items: {time.perf_counter() - start:.1f} s, peak RSS {peak:.2f} GB")


def main() -> None:
    torch.set_num_threads(1)
    what, sizes = sys.argv[1], [int(a) for a in sys.argv[2:]]
    if what == "typiclust":
        typiclust(*sizes)
    elif len(sizes) == 1:
        hac(sizes[0])
    else:
        for n in sizes:
            subprocess.run([sys.executable, __file__, "hac", str(n)], check=True)


if __name__ == "__main__":
    main()
