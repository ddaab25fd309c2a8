"""The first-party acquisitions: the conformance contract and hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch

from autoplat.core.active_learning import (
    Acquisition,
    LoopSettings,
    SimulatedOracle,
    run_experiment,
)
from autoplat.core.interfaces import DataSpec, Splits
from autoplat.core.registry import get_registry
from autoplat.strategies.acquisition.bayesian import BALD, BatchBALD, MeanStd, VariationRatios
from autoplat.strategies.acquisition.committee import KLDisagreement, VoteEntropy
from autoplat.strategies.acquisition.diversity import CoreSet, TypiClust
from autoplat.strategies.acquisition.hybrid import (
    BADGE,
    ClusterMargin,
    GradientEmbeddings,
    RankedBatch,
    average_linkage,
    round_robin,
)
from autoplat.strategies.acquisition.uncertainty import Entropy, LeastConfidence, Margin
from autoplat.testing import AcquisitionContract

NAMES = [
    "random",
    "least-confidence",
    "margin",
    "entropy",
    "bald",
    "variation-ratios",
    "mean-std",
    "batchbald",
    "coreset",
    "typiclust",
    "badge",
    "ranked-batch",
    "cluster-margin",
    "qbc-vote-entropy",
    "qbc-kl",
]
WITH_LABELED = ["coreset", "typiclust", "ranked-batch"]


def outputs_for(
    needs: tuple[str, ...], pool: int, seed: int = 0, tied: bool = False, labeled: int = 6
) -> dict[str, torch.Tensor]:
    """Random model outputs of every kind; ``tied``: all pool rows equal."""
    gen = torch.Generator().manual_seed(seed)
    rows = 1 if tied else pool
    makers = {
        "probs": lambda: torch.randn(rows, 5, generator=gen).softmax(-1),
        "mc_probs": lambda: torch.randn(8, rows, 5, generator=gen).softmax(-1),
        "committee_probs": lambda: torch.randn(4, rows, 5, generator=gen).softmax(-1),
        "embeddings": lambda: torch.randn(rows, 16, generator=gen),
        "labeled_embeddings": lambda: torch.randn(labeled, 16, generator=gen),
    }
    made = {need: makers[need]() for need in needs}
    return {
        need: t if need == "labeled_embeddings" else t.expand(*t.shape[:-2], pool, -1).clone()
        for need, t in made.items()
    }


def pick(acquisition: Acquisition, outputs: dict[str, torch.Tensor], k: int, seed: int = 0):
    return acquisition.select(outputs, k, torch.Generator().manual_seed(seed)).tolist()


def test_every_acquisition_is_registered() -> None:
    registry = get_registry()
    assert set(NAMES) <= set(registry.names("acquisitions"))
    assert all(registry.owners[("acquisitions", name)] == "acquisitions" for name in NAMES)
    assert not [err for info, err in registry.errors() if info.name == "acquisitions"]


class TestContract(AcquisitionContract):
    @pytest.fixture(params=NAMES)
    def acquisition(self, request: pytest.FixtureRequest) -> Acquisition:
        return get_registry().get("acquisitions", request.param)

    @pytest.fixture
    def make_outputs(self, acquisition: Acquisition):
        return lambda pool, seed=0, tied=False: outputs_for(acquisition.needs, pool, seed, tied)


class TestContractNothingLabeled(AcquisitionContract):
    """The first round: an empty labeled set (coreset and ranked_batch have cold starts)."""

    @pytest.fixture(params=WITH_LABELED)
    def acquisition(self, request: pytest.FixtureRequest) -> Acquisition:
        return get_registry().get("acquisitions", request.param)

    @pytest.fixture
    def make_outputs(self, acquisition: Acquisition):
        return lambda pool, seed=0, tied=False: outputs_for(
            acquisition.needs, pool, seed, tied, labeled=0
        )


@pytest.mark.parametrize("name", ["coreset", "ranked-batch", "badge"])
def test_greedy_loops_restore_the_thread_count(name: str) -> None:
    acquisition = get_registry().get("acquisitions", name)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pick(acquisition, outputs_for(acquisition.needs, 30), 5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", WITH_LABELED)
def test_labeled_embeddings_may_be_absent(name: str) -> None:
    acquisition = get_registry().get("acquisitions", name)
    outputs = outputs_for(acquisition.needs, 20, labeled=0)
    without = {key: value for key, value in outputs.items() if key != "labeled_embeddings"}
    assert pick(acquisition, without, 5) == pick(acquisition, outputs, 5)


# -- uncertainty -------------------------------------------------------------------------
PROBS = torch.tensor(
    [
        [0.50, 0.40, 0.10],  # gap 0.10
        [0.90, 0.05, 0.05],  # gap 0.85, peaked
        [0.34, 0.33, 0.33],  # gap 0.01, nearly uniform
        [0.60, 0.10, 0.30],  # gap 0.30
    ]
)


def test_margin_picks_the_smallest_gap_first() -> None:
    assert torch.allclose(Margin().scores({"probs": PROBS}), -torch.tensor([0.1, 0.85, 0.01, 0.3]))
    assert pick(Margin(), {"probs": PROBS}, 4) == [2, 0, 3, 1]


def test_least_confidence() -> None:
    scores = LeastConfidence().scores({"probs": PROBS})
    assert torch.allclose(scores, torch.tensor([0.5, 0.1, 0.66, 0.4]))
    assert pick(LeastConfidence(), {"probs": PROBS}, 2) == [2, 0]


def test_entropy_of_uniform_beats_peaked() -> None:
    probs = torch.tensor([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    scores = Entropy().scores({"probs": probs})
    assert scores[1] == pytest.approx(math.log(3))
    assert scores[2] == 0  # 0 log 0 = 0, no NaN
    assert scores[1] > scores[0] > scores[2]
    assert pick(Entropy(), {"probs": probs}, 1) == [1]


def test_ties_are_broken_by_the_generator() -> None:
    probs = torch.tensor([[0.5, 0.5]] * 6 + [[0.9, 0.1]] * 4)  # six exact ties at the top
    picks = {tuple(pick(Margin(), {"probs": probs}, 3, seed)) for seed in range(10)}
    assert len(picks) > 1, "different seeds must be able to break ties differently"
    assert all(set(p) <= set(range(6)) for p in picks)  # ties among the best only
    assert pick(Margin(), {"probs": probs}, 3, seed=5) == pick(Margin(), {"probs": probs}, 3, 5)


# -- Bayesian --------------------------------------------------------------------------
def test_bald_is_zero_when_all_samples_agree() -> None:
    probs = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)).softmax(-1)
    agreeing = probs.expand(10, 7, 5)
    assert torch.allclose(BALD().scores({"mc_probs": agreeing}), torch.zeros(7), atol=1e-6)


def test_bald_prefers_disagreement_to_shared_uncertainty() -> None:
    mc = torch.tensor(
        [
            [[1.0, 0.0], [0.5, 0.5]],  # sample 1: item 0 sure of class 0, item 1 unsure
            [[0.0, 1.0], [0.5, 0.5]],  # sample 2: item 0 sure of class 1, item 1 unsure
        ]
    )
    scores = BALD().scores({"mc_probs": mc})
    assert scores.tolist() == pytest.approx([math.log(2), 0.0])


def test_variation_ratios_and_mean_std() -> None:
    mc = torch.tensor(  # 4 samples, 2 items, 2 classes
        [
            [[0.9, 0.1], [0.8, 0.2]],
            [[0.8, 0.2], [0.2, 0.8]],
            [[0.7, 0.3], [0.9, 0.1]],
            [[0.4, 0.6], [0.1, 0.9]],
        ]
    )
    assert VariationRatios().scores({"mc_probs": mc}).tolist() == pytest.approx([0.25, 0.5])
    std0 = torch.tensor([0.9, 0.8, 0.7, 0.4]).std(correction=0).item()  # both classes: same std
    std1 = torch.tensor([0.8, 0.2, 0.9, 0.1]).std(correction=0).item()
    assert MeanStd().scores({"mc_probs": mc}).tolist() == pytest.approx([std0, std1])


def mc_probs(samples: int, n: int, classes: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(samples, n, classes, generator=gen, dtype=torch.float64)).softmax(
        -1
    )


def brute_force_batchbald(mc: torch.Tensor, batch: list[int]) -> float:
    """I[y_batch; w] by enumerating every joint label configuration of the batch."""
    classes = mc.shape[2]
    labels = torch.cartesian_prod(*[torch.arange(classes)] * len(batch)).reshape(-1, len(batch))
    given_w = torch.stack([mc[:, item, labels[:, j]] for j, item in enumerate(batch)]).prod(0)
    joint = torch.special.entr(given_w.mean(0)).sum()  # p(labels) = mean over samples
    conditional = torch.special.entr(mc[:, batch]).sum(-1).mean(0).sum()
    return float(joint - conditional)


def test_batchbald_of_one_item_is_bald() -> None:
    mc = mc_probs(10, 40, 4, seed=1)
    bald = BALD().scores({"mc_probs": mc})
    picked, values = BatchBALD().greedy(mc, 1, torch.Generator().manual_seed(0))
    assert picked.tolist() == [int(bald.argmax())]
    assert float(values[0]) == pytest.approx(float(bald.max()))
    assert pick(BatchBALD(), {"mc_probs": mc}, 1) == pick(BALD(), {"mc_probs": mc}, 1)


def test_batchbald_exact_joint_entropies_match_enumeration() -> None:
    mc = mc_probs(6, 25, 3, seed=2)
    picked, values = BatchBALD().greedy(mc, 5, torch.Generator().manual_seed(0))
    for i in range(5):
        assert float(values[i]) == pytest.approx(
            brute_force_batchbald(mc, picked[: i + 1].tolist())
        )
    # greedy: each pick maximizes the joint information of the batch so far
    for i in range(1, 5):
        best = max(
            brute_force_batchbald(mc, [*picked[:i].tolist(), other])
            for other in range(25)
            if other not in picked[:i].tolist()
        )
        assert float(values[i]) == pytest.approx(best)


def test_batchbald_sampled_joint_entropies_are_close() -> None:
    mc = mc_probs(8, 30, 3, seed=3)
    # at most 2000 configurations: exact for picks 1-7 (3^6 = 729), sampled after (3^7 > 2000)
    picks, values = BatchBALD(num_configs=2000).greedy(mc, 10, torch.Generator().manual_seed(0))
    exact_picks, exact = BatchBALD(num_configs=3**9).greedy(mc, 10, torch.Generator())
    assert picks[:7].tolist() == exact_picks[:7].tolist()
    truth = [brute_force_batchbald(mc, picks[: i + 1].tolist()) for i in range(10)]
    assert values[:7].tolist() == pytest.approx(truth[:7], abs=1e-9)
    assert values.tolist() == pytest.approx(truth, abs=0.15)  # ~3.5 sd of the estimate
    assert exact.tolist() == pytest.approx(
        [brute_force_batchbald(mc, exact_picks[: i + 1].tolist()) for i in range(10)]
    )


def test_batchbald_avoids_redundant_copies_that_bald_takes() -> None:
    mc = mc_probs(10, 12, 3, seed=4)
    top = int(BALD().scores({"mc_probs": mc}).argmax())
    copies = torch.cat([mc, mc[:, [top] * 3]], dim=1)  # items 12, 13, 14 copy the top item
    assert set(pick(BALD(), {"mc_probs": copies}, 4)) == {top, 12, 13, 14}
    batch = pick(BatchBALD(), {"mc_probs": copies}, 4)
    assert len({top, 12, 13, 14} & set(batch)) == 1


# -- diversity ---------------------------------------------------------------------------
def blobs(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian blobs in 8-d; returns the points and their blob ids."""
    gen = torch.Generator().manual_seed(seed)
    centers = 100 * torch.eye(8)[: len(sizes)]
    points = torch.cat(
        [centers[i] + torch.randn(size, 8, generator=gen) for i, size in enumerate(sizes)]
    )
    ids = torch.cat([torch.full((size,), i) for i, size in enumerate(sizes)])
    return points, ids


def test_coreset_picks_the_farthest_point_first() -> None:
    labeled = torch.zeros(1, 2)
    pool = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 3.0], [4.5, 0.5], [-2.0, 0.0]])
    outputs = {"embeddings": pool, "labeled_embeddings": labeled}
    # farthest from the origin: (5, 0); then from {origin, (5, 0)}: (0, 3) at 3; then -2.
    assert pick(CoreSet(), outputs, 3) == [1, 2, 4]


def test_coreset_without_labels_starts_anywhere_then_goes_far() -> None:
    pool = torch.tensor([[0.0], [1.0], [10.0], [4.0]])
    firsts = set()
    for seed in range(12):
        picked = pick(CoreSet(), {"embeddings": pool}, 2, seed)
        firsts.add(picked[0])
        farthest = max(range(4), key=lambda i: abs(pool[i, 0] - pool[picked[0], 0]))
        assert picked[1] == farthest
    assert len(firsts) > 1


def farthest_first(pool: torch.Tensor, labeled: torch.Tensor, k: int) -> list[int]:
    """Greedy k-center the slow way: all distances, every step."""
    nearest = torch.cdist(pool, labeled).min(1).values
    picked: list[int] = []
    for _ in range(k):
        picked.append(int(nearest.argmax()))
        nearest = torch.minimum(nearest, torch.cdist(pool, pool[picked[-1:]]).squeeze(1))
        nearest[picked] = -1
    return picked


@pytest.mark.parametrize("spread", [1.0, 30.0])
def test_coreset_equals_brute_force_farthest_first(spread: float) -> None:
    # spread 1: separated blobs, most groups of points are skipped (triangle inequality);
    # spread 30: one cloud, every point is updated every step
    points, _ = blobs([60, 50, 40, 30], seed=1)
    points = points + (spread - 1) * torch.randn(
        points.shape, generator=torch.Generator().manual_seed(2)
    )
    points = points.double()
    pool, labeled = points[8:], points[:8]
    outputs = {"embeddings": pool, "labeled_embeddings": labeled}
    assert pick(CoreSet(), outputs, 40) == farthest_first(pool, labeled, 40)


def test_typiclust_picks_typical_points_of_uncovered_clusters() -> None:
    points, ids = blobs([40, 35, 30, 25, 20, 15])
    labeled = torch.stack([points[ids == 0][0], points[ids == 3][0]])
    outputs = {"embeddings": points, "labeled_embeddings": labeled}
    picked = torch.tensor(pick(TypiClust(neighbors=5), outputs, 4))
    assert ids[picked].tolist() == [1, 2, 4, 5]  # uncovered clusters, largest first
    for item in picked.tolist():  # the most typical member: the densest spot of its blob
        blob = (ids == ids[item]).nonzero().squeeze(1)
        distances = torch.cdist(points[blob], points[blob])
        mean_knn = distances.topk(6, largest=False).values.sum(1) / 5
        assert blob[mean_knn.argmin()] == item


def test_typiclust_visits_small_clusters_last() -> None:
    """Clusters of at most min_cluster_size (5) items: the paper drops them, we go last,
    even after covered clusters."""
    points, ids = blobs([4, 20, 10])
    for seed in range(3):  # nothing labeled, 3 clusters: largest first, the 4-item blob last
        picked = pick(TypiClust(neighbors=5), {"embeddings": points}, 3, seed)
        assert ids[picked].tolist() == [1, 2, 0]
    pool = [i for i in range(len(points)) if i != 4]
    outputs = {"embeddings": points[pool], "labeled_embeddings": points[4:5]}  # one of blob 1
    for seed in range(3):  # L + k = 3 clusters: uncovered blob 2, covered 1, then small 0
        picked = pick(TypiClust(neighbors=5), outputs, 2, seed)
        assert ids[pool][picked].tolist() == [2, 1]


def many_blobs(blobs: int, per: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``blobs`` far-apart tight blobs of ``per`` points each in 32-d; points and blob ids."""
    gen = torch.Generator().manual_seed(seed)
    centers = 100 * torch.randn(blobs, 32, generator=gen, dtype=torch.float64)
    points = centers.repeat_interleave(per, 0)
    points += torch.randn(points.shape, generator=gen, dtype=torch.float64)
    return points, torch.arange(blobs).repeat_interleave(per)


def test_typiclust_uses_l_plus_k_clusters_beyond_500() -> None:
    """L + k clusters, not at most 500 (the paper's code's cap): one pick per blob.

    With 500 clusters for 510 blobs, ten clusters hold two blobs, and their second visit
    may take the same blob again (measured: 505 distinct blobs)."""
    points, ids = many_blobs(510, 6)
    picked = TypiClust(neighbors=3).select({"embeddings": points}, 510, torch.Generator())
    assert sorted(ids[picked].tolist()) == list(range(510))
    points, ids = many_blobs(505, 6)
    labeled = torch.arange(300) * 6  # one item of each of blobs 0..299: 505 clusters
    pool = torch.ones(len(points), dtype=torch.bool)
    pool[labeled] = False
    pool = pool.nonzero().squeeze(1)
    outputs = {"embeddings": points[pool], "labeled_embeddings": points[labeled]}
    picked = pool[TypiClust(neighbors=3).select(outputs, 205, torch.Generator())]
    assert sorted(ids[picked].tolist()) == list(range(300, 505))  # the uncovered blobs 300..504


# -- hybrid -----------------------------------------------------------------------------
def test_badge_implicit_distances_equal_explicit_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.randn(30, 4, generator=gen, dtype=torch.float64).softmax(-1)
    h = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(probs.argmax(1), 4).double()
    explicit = ((probs - onehot)[:, :, None] * h[:, None, :]).reshape(30, -1)  # N x C*D
    grads = GradientEmbeddings(probs, h)
    assert torch.allclose(grads.sq_norms, explicit.square().sum(1))
    for j in (0, 7, 29):
        want = torch.cdist(explicit, explicit[j : j + 1]).squeeze(1).square()
        assert torch.allclose(grads.sq_distances(j), want, atol=1e-10)


def test_badge_starts_with_the_largest_gradient_and_spreads() -> None:
    gen = torch.Generator().manual_seed(1)
    probs = torch.randn(40, 3, generator=gen).softmax(-1)
    h = torch.randn(40, 5, generator=gen)
    outputs = {"probs": probs, "embeddings": h}
    first = int(GradientEmbeddings(probs, h).sq_norms.argmax())
    batches = [pick(BADGE(), outputs, 10, seed) for seed in range(5)]
    assert all(batch[0] == first for batch in batches)
    assert len({tuple(batch) for batch in batches}) > 1  # D^2 draws follow the generator
    # a copy of a picked item has D^2 = 0: never drawn while others are left
    duplicated = {
        "probs": torch.cat([probs, probs[[first]]]),
        "embeddings": torch.cat([h, h[[first]]]),
    }
    assert all(
        len({first, 40} & set(pick(BADGE(), duplicated, 20, seed))) == 1 for seed in range(5)
    )


def test_ranked_batch_weighs_distance_by_alpha() -> None:
    pool = torch.tensor([[0.1], [0.2], [9.0], [9.1]])
    probs = torch.tensor([[0.99, 0.01], [0.5, 0.5], [0.99, 0.01], [0.99, 0.01]])

    def outputs(labeled: int) -> dict[str, torch.Tensor]:
        return {"probs": probs, "embeddings": pool, "labeled_embeddings": torch.zeros(labeled, 1)}

    # 1 labeled, alpha = 4/5: item 3 scores 0.8 (1 - 1/10.1) + 0.2 * 0.01 = 0.723, item 1
    # 0.8 (1 - 1/1.2) + 0.2 * 0.5 = 0.233; then alpha = 3/5 and item 1 (0.2 from the
    # origin, unsure) beats items 0 and 2 (0.1 from the origin or from item 3, sure).
    assert pick(RankedBatch(), outputs(1), 2) == [3, 1]
    # 16 labeled, alpha = 4/20: item 1 scores 0.2 (1 - 1/1.2) + 0.8 * 0.5 = 0.433 > 0.188
    assert pick(RankedBatch(), outputs(16), 1) == [1]


def margin_probs(margins: torch.Tensor) -> torch.Tensor:
    """Two-class probabilities whose top-1 minus top-2 gaps are ``margins``."""
    return torch.stack([(1 + margins) / 2, (1 - margins) / 2], 1)


def test_round_robin_visits_the_smallest_group_first() -> None:
    groups = torch.tensor([7, 7, 7, 3, 9, 9])  # sizes: 7 -> 3, 3 -> 1, 9 -> 2
    orders = set()
    for seed in range(6):
        picked = round_robin(groups, 6, torch.Generator().manual_seed(seed)).tolist()
        assert groups[picked].tolist() == [3, 9, 7, 9, 7, 7]  # pass 1: 3, 9, 7; 2: 9, 7; 3: 7
        orders.add(tuple(picked))
    assert len(orders) > 1  # members are drawn at random
    assert groups[round_robin(groups, 2, torch.Generator())].tolist() == [3, 9]
    tied = torch.tensor([0, 0, 1, 1])  # equal sizes: the first group is drawn too
    firsts = {int(tied[round_robin(tied, 1, torch.Generator().manual_seed(s))]) for s in range(8)}
    assert firsts == {0, 1}


def upgma(x: torch.Tensor, clusters: int | None = None, threshold: float = math.inf):
    """Average linkage the slow way: merge the two closest clusters (mean pairwise
    distance) until ``clusters`` are left or the closest two are farther than ``threshold``.
    Returns the clusters as a set of frozensets of row indices."""
    distance = torch.cdist(x, x)
    groups = [[i] for i in range(len(x))]
    while len(groups) > (clusters or 1):
        pairs = [
            (distance[a][:, b].mean().item(), i, j)
            for i, a in enumerate(groups)
            for j, b in enumerate(groups)
            if i < j
        ]
        d, i, j = min(pairs)
        if d > threshold:
            break
        groups[i] = groups[i] + groups.pop(j)
    return {frozenset(g) for g in groups}


def partition(ids: torch.Tensor) -> set[frozenset[int]]:
    return {frozenset((ids == c).nonzero().squeeze(1).tolist()) for c in ids.unique()}


@pytest.mark.parametrize("seed", [0, 1])
def test_average_linkage_is_upgma(seed: int) -> None:
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rng = torch.Generator().manual_seed(seed)
    assert partition(average_linkage(x, 4, None, 1000, rng)) == upgma(x, clusters=4)
    assert partition(average_linkage(x, 4, 1.5, 1000, rng)) == upgma(x, threshold=1.5)


def test_average_linkage_above_max_items_joins_the_nearest_sampled_row() -> None:
    points, ids = blobs([10, 10, 10])
    for seed in range(3):
        rng = torch.Generator().manual_seed(seed)
        assert partition(average_linkage(points, 3, None, 15, rng)) == partition(ids)
    lone = average_linkage(points[:3], 3, None, 1, torch.Generator())  # one row: one cluster
    assert lone.tolist() == [0, 0, 0]


def test_cluster_margin_spreads_over_clusters_among_low_margins() -> None:
    points, ids = blobs([12, 8, 5])
    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))
    margins = torch.linspace(0.0, 0.5, len(points))[order]
    outputs = {"probs": margin_probs(margins), "embeddings": points}
    for seed in range(3):  # every item a candidate: one per blob, the smallest blob first
        picked = pick(ClusterMargin(candidates=9, clusters=3), outputs, 3, seed)
        assert ids[picked].tolist() == [2, 1, 0]
    low = torch.full((25,), 0.5)  # the 6 smallest margins: 3 in blob 0, 2 in blob 1, 1 in 2
    low[[0, 1, 2, 12, 13, 20]] = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    outputs = {"probs": margin_probs(low), "embeddings": points}
    for seed in range(3):  # k_m = 2 k = 6 candidates, groups of 1, 2 and 3
        picked = pick(ClusterMargin(candidates=2, clusters=3), outputs, 3, seed)
        assert ids[picked].tolist() == [2, 1, 0]
        assert set(picked) <= {0, 1, 2, 12, 13, 20}
        picked = pick(ClusterMargin(candidates=1, clusters=3), outputs, 6, seed)
        assert ids[picked].tolist() == [2, 1, 0, 1, 0, 0]  # passes: 2, 1, 0; 1, 0; 0


def test_cluster_margin_clusters_the_pool_once() -> None:
    """Round 2 reuses round 1's clusters of the whole pool, not its own embeddings."""
    points, ids = blobs([12, 8, 5])
    margins = torch.linspace(0.0, 0.5, len(points))
    known = points[:0]
    first = {"probs": margin_probs(margins), "embeddings": points, "labeled_embeddings": known}
    acquisition = ClusterMargin(candidates=9, clusters=3)
    picked = pick(acquisition, first, 3)
    assert ids[picked].tolist() == [2, 1, 0]
    rest = [i for i in range(len(points)) if i not in picked]
    # the next model embeds the pool differently: two blobs, by index parity
    moved = 100 * torch.eye(8)[torch.tensor(rest) % 2] + torch.randn(len(rest), 8)
    second = {
        "probs": margin_probs(margins[rest]),
        "embeddings": moved,
        "labeled_embeddings": points[picked],
    }
    again = [rest[i] for i in pick(acquisition, second, 3, seed=1)]
    assert ids[again].tolist() == [2, 1, 0]  # round 1's blobs, smallest first
    fresh = [rest[i] for i in pick(ClusterMargin(candidates=9, clusters=3), second, 3, seed=1)]
    assert ids[fresh].tolist() != [2, 1, 0]
    # a pool that is not round 1's less its picks (here: no new labels) is clustered afresh
    unexpected = {**second, "labeled_embeddings": known}
    redo = ClusterMargin(candidates=9, clusters=3)
    pick(redo, first, 3)
    assert pick(redo, unexpected, 3, 1) == pick(
        ClusterMargin(candidates=9, clusters=3), unexpected, 3, 1
    )


def test_cluster_margin_clusters_the_labeled_items_too() -> None:
    """The tree is built on labeled + pool items: labeled items can join pool groups."""
    pool = torch.tensor([[0.0], [0.1], [10.0], [10.1], [24.0], [24.1]])
    outputs = {"probs": margin_probs(torch.zeros(6)), "embeddings": pool}
    # alone, the pairs at 0 and 10 merge (10 apart) before 10 and 24 (14 apart)
    firsts = {pick(ClusterMargin(clusters=2), outputs, 1, seed)[0] for seed in range(8)}
    assert firsts == {4, 5}  # the smaller group, {4, 5}, first
    # labeled items between 10 and 24 chain them: the groups become {0, 1} and {2, .., 5}
    bridged = {**outputs, "labeled_embeddings": torch.tensor([[13.0], [16.0], [19.0], [22.0]])}
    firsts = {pick(ClusterMargin(clusters=2), bridged, 1, seed)[0] for seed in range(8)}
    assert firsts == {0, 1}


class CountingClusterMargin(ClusterMargin):
    """Cluster-Margin that counts its HAC runs."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.runs = 0

    def cluster(self, x, k, rng):
        self.runs += 1
        return super().cluster(x, k, rng)


def test_cluster_margin_clusters_once_per_experiment_in_the_loop() -> None:
    """Through the real loop (a new model every round): one HAC per experiment."""
    points, ids = blobs([30, 20, 10])
    splits = Splits(
        train=(points, ids),
        val=(points[:5], ids[:5]),
        test=(points, ids),
        spec=DataSpec("classification", "tabular", (8,), 3),
    )

    def train(labeled, labels, seed, model):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
        return net, {"test_accuracy": 0.0}

    acquisition = CountingClusterMargin(clusters=3)
    rows: list[dict] = []
    settings = LoopSettings(initial=5, batch_size=4, rounds=3)
    for seed in (0, 1):  # a second experiment with the same instance clusters afresh
        run_experiment(
            splits, acquisition, SimulatedOracle(ids), settings, seed, train, rows.append
        )
        assert acquisition.runs == seed + 1
    assert [len(r["queried"]) for r in rows] == [5, 4, 4, 4] * 2


# -- committee -------------------------------------------------------------------------
def test_vote_entropy_counts_votes() -> None:
    committee = torch.tensor(  # 4 members, 2 items, 2 classes
        [
            [[0.9, 0.1], [0.6, 0.4]],
            [[0.2, 0.8], [0.7, 0.3]],
            [[0.6, 0.4], [0.8, 0.2]],
            [[0.3, 0.7], [0.9, 0.1]],
        ]
    )
    scores = VoteEntropy().scores({"committee_probs": committee})
    assert scores.tolist() == pytest.approx([math.log(2), 0.0])  # 2-2 split; unanimous


def test_kl_disagreement() -> None:
    same = torch.tensor([[0.7, 0.3]]).expand(3, 1, 2)
    assert KLDisagreement().scores({"committee_probs": same}).tolist() == pytest.approx([0.0])
    split = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # consensus (0.5, 0.5): KL = log 2 each
    assert KLDisagreement().scores({"committee_probs": split}).tolist() == pytest.approx(
        [math.log(2)]
    )
