"""Hybrid acquisitions: uncertainty from ``probs`` (N, C), diversity from ``embeddings`` (N, D)."""

from __future__ import annotations

import math

import torch

from autoplat.strategies.acquisition.base import (
    CHUNK,
    NearestCenters,
    PermutedAcquisition,
    categorical,
    labeled_embeddings,
    one_thread,
    permutation,
)


class GradientEmbeddings:
    """BADGE's gradient embeddings ``g_i = a_i (x) h_i`` with ``a_i = p_i - onehot(argmax p_i)``.

    g_i is the gradient of the cross-entropy loss at the predicted label with respect to
    the last linear layer's weights (C x D). It is kept factored: ``<g_i, g_j> = <a_i, a_j>
    <h_i, h_j>``, so a distance to one point costs O(N (C + D)) and the N x C*D matrix is
    never built.

    Args:
        probs: (N, C) class probabilities.
        embeddings: (N, D) the last layer's inputs.
    """

    def __init__(self, probs: torch.Tensor, embeddings: torch.Tensor) -> None:
        self.a = probs - torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).to(probs)
        self.h = embeddings
        self.sq_norms = (self.a * self.a).sum(1) * (self.h * self.h).sum(1)

    def sq_distances(self, j: int | torch.Tensor) -> torch.Tensor:
        """(N,) squared Euclidean distances ``|g_i - g_j|^2`` from every item i to item j."""
        distance = torch.addcmul(self.sq_norms, self.a @ self.a[j], self.h @ self.h[j], value=-2)
        return distance.add_(self.sq_norms[j]).clamp_min_(0)


class BADGE(PermutedAcquisition):
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings.

    The first pick maximizes ``|g_x|`` (as in the paper's code); each next pick is drawn
    with probability proportional to ``min_{c in picked} |g_x - g_c|^2`` (uniformly among
    the unpicked when all those are 0). Large gradients mean uncertain predictions;
    D^2-sampling spreads the batch. Returns ``k`` indices in the order they were drawn.
    """

    name = "badge"
    needs = ("probs", "embeddings")

    def select_permuted(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """k-means++ seeding with seeded D^2 draws (see ``GradientEmbeddings``)."""
        grads = GradientEmbeddings(outputs["probs"], outputs["embeddings"])
        nearest = torch.full_like(grads.sq_norms, math.inf)
        taken = torch.zeros(len(nearest), dtype=torch.bool, device=nearest.device)
        picked = torch.empty(k, dtype=torch.int64, device=nearest.device)
        best = grads.sq_norms.argmax()
        with one_thread():
            for i in range(k):
                picked[i] = best
                taken[best] = True
                torch.minimum(nearest, grads.sq_distances(best), out=nearest)
                nearest[best] = 0
                if i + 1 < k:
                    weights = nearest if nearest.sum() > 0 else (~taken).to(nearest)
                    best = categorical(weights[None], rng)[0, 0]
        return picked


class RankedBatch(PermutedAcquisition):
    """Ranked batch-mode sampling (Cardoso et al. 2017), as modAL's ``ranked_batch``.

    Step i picks the pool item maximizing ``alpha (1 - 1 / (1 + d(x))) + (1 - alpha) u(x)``
    with u(x) = 1 - max_c p(c|x) (least confidence), d(x) the Euclidean distance to the
    nearest embedding of the labeled set and the items already picked, and ``alpha =
    |U| / (|U| + |L|)`` for the current unlabeled pool U and labeled set L (each pick
    moves one item from U to L). With nothing labeled the first pick is the item of least
    mean distance to the pool (O(N^2 D) time). Returns ``k`` indices in pick order.
    """

    name = "ranked_batch"
    needs = ("probs", "embeddings", "labeled_embeddings")

    def select_permuted(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Greedy ranking; ties go to the lowest index."""
        x = outputs["embeddings"]
        uncertainty = 1 - outputs["probs"].amax(1)
        labeled = labeled_embeddings(outputs, x)
        n, total = len(x), len(x) + len(labeled)
        centers = NearestCenters(x, labeled, k)
        taken = torch.zeros(n, dtype=torch.bool, device=x.device)
        picked = torch.empty(k, dtype=torch.int64, device=x.device)
        start = 0
        if len(labeled) == 0:  # cold start
            picked[0] = best = self.most_central(x)
            taken[best] = True
            centers.add(best)
            start = 1
        with one_thread():
            for i in range(start, k):
                alpha = (n - i) / total
                similarity = 1 / (1 + centers.nearest.sqrt())
                score = alpha * (1 - similarity) + (1 - alpha) * uncertainty
                picked[i] = best = score.masked_fill_(taken, -math.inf).argmax()
                taken[best] = True
                centers.add(best)
        return picked

    @staticmethod
    def most_central(x: torch.Tensor) -> torch.Tensor:
        """The row of ``x`` with the least mean Euclidean distance to all rows (cold start)."""
        rows = max(1, CHUNK // len(x))
        mean = torch.cat(
            [torch.cdist(x[start : start + rows], x).mean(1) for start in range(0, len(x), rows)]
        )
        return mean.argmin()


class ClusterMargin(PermutedAcquisition):
    """Cluster-Margin (Citovsky et al. 2021): margin candidates, diversified by clusters.

    Takes the ``ceil(candidates * k)`` items of smallest margin ``p_(1) - p_(2)``, clusters
    their embeddings by hierarchical agglomerative clustering (average linkage, scikit-
    learn) into ``clusters`` clusters (default k), then picks round-robin over the clusters
    sorted by size, smallest first, a random not-yet-picked member of each. So it
    minimizes the margin subject to spreading the batch over clusters. The paper clusters
    the whole pool once; each call here sees one round's outputs, so it clusters the
    candidates. Returns ``k`` indices in pick order.

    Args:
        candidates: Candidates per picked item (k_m / k in the paper).
        clusters: Number of clusters; ``None`` for k.
    """

    name = "cluster_margin"
    needs = ("probs", "embeddings")

    def __init__(self, candidates: float = 10.0, clusters: int | None = None) -> None:
        self.candidates = candidates
        self.clusters = clusters

    def select_permuted(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Round-robin over the candidates' clusters; size ties and members in seeded order."""
        top = outputs["probs"].topk(2, dim=1).values
        x = outputs["embeddings"]
        count = min(len(x), math.ceil(self.candidates * k))
        candidates = torch.sort(top[:, 0] - top[:, 1], stable=True).indices[:count]
        n_clusters = min(self.clusters or k, count)
        ids = self.cluster(x[candidates], n_clusters)
        sizes = torch.bincount(ids, minlength=n_clusters)
        order = permutation(n_clusters, rng, x.device)
        order = order[torch.sort(sizes[order], stable=True).indices]  # smallest first
        position = torch.empty_like(order)
        position[order] = torch.arange(n_clusters, device=x.device)
        shuffled = permutation(count, rng, x.device)
        grouped = shuffled[torch.sort(position[ids[shuffled]], stable=True).indices]
        group = position[ids[grouped]]  # members of the first visited cluster first
        starts = sizes[order].cumsum(0) - sizes[order]
        turn = torch.arange(count, device=x.device) - starts[group]  # round of each pick
        chosen = grouped[torch.sort(turn * n_clusters + group).indices[:k]]
        return candidates[chosen]

    @staticmethod
    def cluster(x: torch.Tensor, n_clusters: int) -> torch.Tensor:
        """Average-linkage agglomerative cluster ids of the rows of ``x`` (int64)."""
        if n_clusters == 1:
            return torch.zeros(len(x), dtype=torch.int64, device=x.device)
        from sklearn.cluster import AgglomerativeClustering  # not at import: CLI start-up

        ids = AgglomerativeClustering(n_clusters=n_clusters, linkage="average").fit_predict(
            x.detach().cpu().numpy()
        )
        return torch.as_tensor(ids, dtype=torch.int64, device=x.device)
