"""Hybrid acquisitions: uncertainty from ``probs`` (N, C), diversity from ``embeddings`` (N, D)."""

from __future__ import annotations

import math

import torch

from autoplat.core.interfaces import Acquisition
from autoplat.strategies.acquisition.base import (
    CHUNK,
    NearestCenters,
    PermutedAcquisition,
    categorical,
    labeled_embeddings,
    one_thread,
    permutation,
    top_k,
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

    name = "ranked-batch"
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


def average_linkage(
    x: torch.Tensor, clusters: int, threshold: float | None, max_items: int, rng: torch.Generator
) -> torch.Tensor:
    """Average-linkage HAC cluster ids (int64, on ``x``'s device) of the rows of ``x``.

    The tree (scipy's UPGMA, Euclidean) is cut at distance ``threshold`` or, without one,
    into at most ``clusters`` clusters. It holds all pairwise distances (8 n² / 2 bytes),
    so above ``max_items`` rows it is built on a seeded random ``max_items`` of them and
    every other row joins the cluster of its nearest row in that sample. The rows go in a
    seeded random order, so equal distances are not settled by their order in ``x``.
    """
    from scipy.cluster.hierarchy import fcluster, linkage  # not at import: CLI start-up

    order = permutation(len(x), rng, x.device)
    sample = order[:max_items]
    ids = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    if len(sample) > 1:
        tree = linkage(x[sample].detach().double().cpu().numpy(), method="average")
        cut = ("distance", threshold) if threshold is not None else ("maxclust", clusters)
        flat = fcluster(tree, cut[1], criterion=cut[0])
        ids[sample] = torch.as_tensor(flat, dtype=torch.int64, device=x.device) - 1
    rest = order[max_items:]
    rows = max(1, CHUNK // len(sample))
    for start in range(0, len(rest), rows):
        part = rest[start : start + rows]
        ids[part] = ids[sample[torch.cdist(x[part], x[sample]).argmin(1)]]
    return ids


def round_robin(groups: torch.Tensor, k: int, rng: torch.Generator) -> torch.Tensor:
    """``k`` positions into ``groups`` (group ids), one group at a time, smallest group first.

    Groups are sorted by size, ascending (equal sizes in seeded random order); each pass
    visits them in that order and takes a random not-yet-taken member of each group that
    has one left, until ``k`` are taken (Cluster-Margin's sampling). Returns pick order.
    """
    ids = torch.unique(groups, return_inverse=True)[1]
    count = int(ids.max()) + 1
    sizes = torch.bincount(ids, minlength=count)
    order = permutation(count, rng, ids.device)
    order = order[torch.sort(sizes[order], stable=True).indices]  # smallest first
    position = torch.empty_like(order)
    position[order] = torch.arange(count, device=ids.device)
    shuffled = permutation(len(ids), rng, ids.device)  # members in random order
    grouped = shuffled[torch.sort(position[ids[shuffled]], stable=True).indices]
    group = position[ids[grouped]]  # members of the first visited group first
    starts = sizes[order].cumsum(0) - sizes[order]
    turn = torch.arange(len(ids), device=ids.device) - starts[group]  # the pass of each
    return grouped[torch.sort(turn * count + group).indices[:k]]


class ClusterMargin(Acquisition):
    """Cluster-Margin (Citovsky et al. 2021): low-margin candidates spread over HAC clusters.

    Once per experiment, the embeddings of the whole pool (labeled and unlabeled, from
    the model of the first query round, i.e. trained on the initial labels) are clustered
    by average-linkage HAC (``average_linkage``). Each round takes the ``k_m =
    ceil(candidates * k)`` pool items of smallest margin ``p_(1) - p_(2)``, groups them by
    those clusters, and picks round-robin over the groups, smallest group first, a random
    member of each (``round_robin``). Returns ``k`` indices in pick order.

    The clusters are kept for the next round: its pool is expected to be this pool less
    the picks, in the same order, with ``k`` more labeled items (the loop's rule). A call
    that does not fit (a new experiment, a resumed one) clusters its own pool afresh.

    Args:
        candidates: k_m / k_t of the paper: margin candidates per picked item.
        clusters: Clusters to cut the tree into; ``None``: the first round's ``k`` (the
            choice is measured in docs/fidelity.md).
        threshold: Cut the tree at this average-linkage distance instead (the paper's ε).
        max_items: Items HAC runs on; beyond, a random sample (see ``average_linkage``).
    """

    name = "cluster-margin"
    needs = ("probs", "embeddings", "labeled_embeddings")

    def __init__(
        self,
        candidates: float = 10.0,
        clusters: int | None = None,
        threshold: float | None = None,
        max_items: int = 10_000,
    ) -> None:
        self.candidates, self.clusters = candidates, clusters
        self.threshold, self.max_items = threshold, max_items
        self.kept: tuple[torch.Tensor, int] | None = None  # next pool's cluster ids, labeled

    def select(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Up to ``k`` pool indices, in pick order."""
        x = outputs["embeddings"]
        k = min(k, len(x))
        if k <= 0:
            return torch.empty(0, dtype=torch.int64, device=x.device)
        labeled = labeled_embeddings(outputs, x)
        if self.kept is not None and (len(self.kept[0]), self.kept[1]) == (len(x), len(labeled)):
            ids = self.kept[0].to(x.device)
        else:
            ids = self.cluster(torch.cat([labeled, x]), k, rng)[len(labeled) :]
        top = outputs["probs"].topk(2, dim=1).values
        count = min(len(x), max(k, math.ceil(self.candidates * k)))
        candidates = top_k(top[:, 1] - top[:, 0], count, rng)  # smallest margins
        picked = candidates[round_robin(ids[candidates], k, rng)]
        kept = torch.ones(len(x), dtype=torch.bool, device=x.device)
        kept[picked] = False
        self.kept = (ids[kept], len(labeled) + k)
        return picked

    def cluster(self, x: torch.Tensor, k: int, rng: torch.Generator) -> torch.Tensor:
        """HAC cluster ids of the rows of ``x`` with this instance's settings."""
        clusters = self.clusters or k
        return average_linkage(x, clusters, self.threshold, self.max_items, rng)
