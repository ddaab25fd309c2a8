"""Diversity acquisitions on penultimate-layer ``embeddings`` (N, D) of the pool.

Both also read ``labeled_embeddings`` (L, D) of the labeled set; when it is absent or
empty (the first round) they run as if nothing were labeled.
"""

from __future__ import annotations

import warnings

import torch

from autoplat.strategies.acquisition.base import (
    CHUNK,
    NearestCenters,
    PermutedAcquisition,
    labeled_embeddings,
    one_thread,
    permutation,
    seed,
)


class CoreSet(PermutedAcquisition):
    """Core-set by greedy k-center (Sener & Savarese 2018).

    Step i picks the pool item x maximizing ``min_{c in L + picked} |x - c|_2``: the
    farthest from the labeled set and from the items already picked. With nothing labeled
    the first pick is random. Returns ``k`` indices in the order they were picked.
    """

    name = "coreset"
    needs = ("embeddings", "labeled_embeddings")

    def select_permuted(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Farthest-first traversal from the labeled set; ties go to the lowest index."""
        x = outputs["embeddings"]
        centers = NearestCenters(x, labeled_embeddings(outputs, x), k)
        picked = torch.empty(k, dtype=torch.int64, device=x.device)
        with one_thread():
            for i in range(k):
                picked[i] = best = centers.nearest.argmax()
                centers.add(best)
        return picked


def typicality(x: torch.Tensor, neighbors: int) -> torch.Tensor:
    """TypiClust's typicality of each row of ``x`` (n, D) within that set.

    ``1 / (mean distance to its min(neighbors, n // 2) nearest other rows + 1e-5)``, as in
    the paper's code; 1 for every row of a set too small to have neighbours.
    """
    count = min(neighbors, len(x) // 2)
    if count == 0:
        return x.new_ones(len(x))
    rows = max(1, CHUNK // len(x))
    mean = torch.cat(
        [
            torch.cdist(x[start : start + rows], x, compute_mode="donot_use_mm_for_euclid_dist")
            .topk(count + 1, largest=False)  # the row itself (distance 0) and its neighbours
            .values.sum(1)
            / count
            for start in range(0, len(x), rows)
        ]
    )
    return 1 / (mean + 1e-5)


class TypiClust(PermutedAcquisition):
    """TypiClust (Hacohen et al. 2022): the most typical item of each uncovered cluster.

    k-means (scikit-learn's; mini-batch above 50 clusters, as in the paper's code) splits
    labeled + pool embeddings into ``L + k`` clusters (the paper's |L| + B; at most
    ``max_clusters`` when set). Clusters are visited round-robin in order of fewest
    labeled members, then largest; clusters of at most ``min_cluster_size`` items come
    last (the paper drops them). Each visit picks the cluster's remaining pool item of
    highest ``typicality`` (computed among those items), i.e. it maximizes 1 / mean
    distance to its nearest neighbours. Returns ``k`` indices in pick order.

    Args:
        neighbors: Nearest neighbours in the typicality (the paper's 20).
        max_clusters: Cap on the number of clusters; ``None`` (default) for none. The
            paper's code caps at 500 to bound the k-means time.
        min_cluster_size: Clusters this small are visited last.
    """

    name = "typiclust"
    needs = ("embeddings", "labeled_embeddings")

    def __init__(
        self, neighbors: int = 20, max_clusters: int | None = None, min_cluster_size: int = 5
    ) -> None:
        self.neighbors = neighbors
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size

    def select_permuted(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Round-robin over clusters, most typical remaining item first."""
        x = outputs["embeddings"]
        labeled = labeled_embeddings(outputs, x)
        wanted = min(len(labeled) + k, self.max_clusters or len(labeled) + k)
        n_clusters = min(wanted, len(labeled) + len(x))
        clusters = self.cluster(torch.cat([labeled, x]), n_clusters, rng)
        sizes = torch.bincount(clusters, minlength=n_clusters)
        covered = torch.bincount(clusters[: len(labeled)], minlength=n_clusters)
        order = permutation(n_clusters, rng, x.device)
        for key in (-sizes, covered, sizes <= self.min_cluster_size):  # least significant first
            order = order[torch.sort(key[order], stable=True).indices]
        in_pool = clusters[len(labeled) :]
        groups = torch.split(  # pool items of each cluster, in increasing index order
            torch.sort(in_pool, stable=True).indices,
            torch.bincount(in_pool, minlength=n_clusters).tolist(),
        )
        members = {cluster: groups[cluster] for cluster in order.tolist()}  # visiting order
        picked: list[torch.Tensor] = []
        while len(picked) < k:
            for cluster, items in list(members.items()):
                if len(items) == 0:
                    del members[cluster]
                    continue
                best = typicality(x[items], self.neighbors).argmax()
                picked.append(items[best])
                members[cluster] = torch.cat([items[:best], items[best + 1 :]])
                if len(picked) == k:
                    break
        return torch.stack(picked)

    @staticmethod
    def cluster(points: torch.Tensor, n_clusters: int, rng: torch.Generator) -> torch.Tensor:
        """k-means cluster ids (int64, on ``points``' device), seeded from ``rng``.

        BLAS runs on one thread inside (as ``one_thread``; measured on 2 busy cores: 2 s
        against 10-22 s on two threads for 505 clusters of 3,030 points).
        """
        from sklearn.cluster import KMeans, MiniBatchKMeans  # not at import: CLI start-up
        from sklearn.exceptions import ConvergenceWarning
        from threadpoolctl import threadpool_limits

        algorithm = KMeans if n_clusters <= 50 else MiniBatchKMeans
        # the paper's code: mini-batches of 5,000; no reassignment here (it split 1-2 of
        # 505 well-separated blobs, see test_typiclust_uses_l_plus_k_clusters_beyond_500)
        options = {} if n_clusters <= 50 else {"batch_size": 5000, "reassignment_ratio": 0.0}
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)  # duplicates: fewer clusters
            ids = algorithm(n_clusters=n_clusters, random_state=seed(rng), **options).fit_predict(
                points.detach().cpu().numpy()
            )
        return torch.as_tensor(ids, dtype=torch.int64, device=points.device)
