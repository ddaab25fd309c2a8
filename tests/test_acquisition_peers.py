"""Our acquisitions against other libraries' implementations, on the same inputs.

Peers: modAL (uncertainty measures, ranked batch), baal (BALD, Entropy, Margin,
BatchBALD) and scikit-activeml (BatchBALD, CoreSet, BADGE, TypiClust, query-by-committee
measures). Each test skips when its peer is not installed. The small objects below only
hand the peers their input (a fixed probability matrix) through the interface they take.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoplat.strategies.acquisition.bayesian import BALD, BatchBALD, VariationRatios
from autoplat.strategies.acquisition.committee import KLDisagreement, VoteEntropy
from autoplat.strategies.acquisition.diversity import CoreSet, TypiClust
from autoplat.strategies.acquisition.hybrid import BADGE, GradientEmbeddings, RankedBatch
from autoplat.strategies.acquisition.uncertainty import Entropy, LeastConfidence, Margin


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_probs(*shape: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    logits = scale * torch.randn(*shape, generator=generator(seed), dtype=torch.float64)
    return logits.softmax(-1)


def mc_dropout_probs(samples: int, n: int, classes: int, seed: int = 0) -> torch.Tensor:
    """MC-dropout-like samples: a shared prediction per item plus per-sample noise."""
    gen = generator(seed)
    base = 2.5 * torch.randn(1, n, classes, generator=gen, dtype=torch.float64)
    return (base + torch.randn(samples, n, classes, generator=gen, dtype=torch.float64)).softmax(-1)


class FixedProbs:
    """A fitted classifier whose ``predict_proba`` returns the given probabilities."""

    def __init__(self, probs: np.ndarray, pool: np.ndarray | None = None) -> None:
        self.probs = probs
        self.pool = pool
        self.X_training = None  # modAL's learner attributes, used by ranked batch
        self.on_transformed = False

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.pool is None:  # X holds row indices
            return self.probs[X[:, 0].astype(int)]
        assert X.shape == self.pool.shape and np.array_equal(X, self.pool)
        return self.probs


# -- modAL ----------------------------------------------------------------------------
@pytest.fixture
def modal_uncertainty():
    return pytest.importorskip("modAL.uncertainty")


def test_modal_uncertainty_measures(modal_uncertainty) -> None:
    probs = random_probs(200, 7)
    clf, rows = FixedProbs(probs.numpy()), np.arange(200)[:, None]
    outputs = {"probs": probs}
    pairs = [
        (LeastConfidence(), modal_uncertainty.classifier_uncertainty(clf, rows), 1),
        (Margin(), modal_uncertainty.classifier_margin(clf, rows), -1),  # we maximize -margin
        (Entropy(), modal_uncertainty.classifier_entropy(clf, rows), 1),
    ]
    for acquisition, theirs, sign in pairs:
        ours = acquisition.scores(outputs).numpy()
        np.testing.assert_allclose(ours, sign * theirs, rtol=1e-10, atol=1e-12)
        picked = acquisition.select(outputs, 20, generator()).tolist()
        assert picked == np.argsort(-sign * theirs, kind="stable")[:20].tolist()


def test_modal_sampling_selections(modal_uncertainty) -> None:
    probs = random_probs(300, 5, seed=1)
    clf, rows = FixedProbs(probs.numpy()), np.arange(300)[:, None]
    for acquisition, sampling in [
        (LeastConfidence(), modal_uncertainty.uncertainty_sampling),
        (Margin(), modal_uncertainty.margin_sampling),
        (Entropy(), modal_uncertainty.entropy_sampling),
    ]:
        theirs, _ = sampling(clf, rows, n_instances=25)
        ours = acquisition.select({"probs": probs}, 25, generator())
        assert set(ours.tolist()) == set(theirs.tolist())


@pytest.mark.parametrize("labeled", [3, 40])
def test_modal_ranked_batch(labeled: int) -> None:
    batch = pytest.importorskip("modAL.batch")
    gen = generator(labeled)
    probs = random_probs(150, 4, seed=labeled)
    pool = torch.randn(150, 6, generator=gen, dtype=torch.float64)
    known = torch.randn(labeled, 6, generator=gen, dtype=torch.float64)
    learner = FixedProbs(probs.numpy(), pool.numpy())
    learner.X_training = known.numpy()
    theirs, _ = batch.uncertainty_batch_sampling(learner, pool.numpy(), n_instances=30)
    outputs = {"probs": probs, "embeddings": pool, "labeled_embeddings": known}
    assert RankedBatch().select(outputs, 30, generator()).tolist() == theirs.tolist()


# -- baal ----------------------------------------------------------------------------
@pytest.fixture
def baal():
    return pytest.importorskip("baal.active.heuristics")


def test_baal_bald_entropy_margin(baal) -> None:
    mc = mc_dropout_probs(20, 300, 6, seed=2)
    per_item = mc.permute(1, 2, 0).numpy()  # baal's [N, C, iterations]
    probs = mc.mean(0)
    cases = [
        (BALD(), {"mc_probs": mc}, baal.BALD(), per_item, 1),
        (Entropy(), {"probs": probs}, baal.Entropy(), probs.numpy(), 1),
        (Margin(), {"probs": probs}, baal.Margin(), probs.numpy(), -1),
    ]
    for ours, outputs, theirs, predictions, sign in cases:
        ranks, scores = theirs.get_ranks(predictions)
        np.testing.assert_allclose(ours.scores(outputs).numpy(), sign * scores, atol=1e-10)
        assert ours.select(outputs, 50, generator()).tolist() == ranks[:50].tolist()


def test_baal_batchbald_selects_the_same_batch(baal) -> None:
    mc = mc_dropout_probs(20, 200, 4, seed=3)
    top = BALD().scores({"mc_probs": mc}).topk(3).indices
    pool = torch.cat([mc, mc[:, top.repeat(2)]], dim=1)  # two copies of BALD's top three
    torch.manual_seed(0)  # baal draws its joint-entropy samples from torch's global RNG
    # baal always samples (10,000 configurations here); its later picks vary with its seed
    scores = baal.BatchBALD(num_samples=3, num_draw=500).compute_score(
        pool.permute(1, 2, 0).numpy()
    )
    theirs = np.nonzero(scores)[0].tolist()
    ours = BatchBALD().select({"mc_probs": pool}, 4, generator()).tolist()

    def original(item: int) -> int:  # a copy stands for the item it copies
        return int(top[(item - 200) % 3]) if item >= 200 else item

    assert len(theirs) == 4
    assert {original(i) for i in ours} == {original(i) for i in theirs}
    assert len({original(i) for i in ours}) == 4  # never two copies of one item
    assert len(set(pick_bald(pool, 4)) - set(range(200))) >= 2  # BALD takes copies


def pick_bald(mc: torch.Tensor, k: int) -> list[int]:
    return BALD().select({"mc_probs": mc}, k, generator()).tolist()


# -- scikit-activeml --------------------------------------------------------------------
@pytest.fixture
def skal():
    return pytest.importorskip("skactiveml.pool")


def test_skactiveml_batchbald_exact(skal) -> None:
    mc = mc_dropout_probs(12, 120, 3, seed=4)
    utilities = skal.batch_bald(mc.numpy().copy(), batch_size=6, n_MC_samples=1000)
    theirs = np.nanargmax(utilities, axis=1)
    picked, values = BatchBALD(num_configs=1000).greedy(mc, 6, generator())
    assert picked.tolist() == theirs.tolist()  # 3^6 configurations: both exact
    np.testing.assert_allclose(values.numpy(), utilities[np.arange(6), theirs], atol=1e-6)
    assert pick_batchbald(mc, 6) == theirs.tolist()


def pick_batchbald(mc: torch.Tensor, k: int) -> list[int]:
    return BatchBALD(num_configs=1000).select({"mc_probs": mc}, k, generator()).tolist()


def test_skactiveml_batchbald_sampled(skal) -> None:
    mc = mc_dropout_probs(10, 80, 4, seed=5)
    # 4^7 > 4096: both sample configurations from the 8th pick on (differently seeded)
    utilities = skal.batch_bald(mc.numpy().copy(), 9, n_MC_samples=4096, random_state=0)
    theirs = np.nanargmax(utilities, axis=1)
    picked, values = BatchBALD(num_configs=4096).greedy(mc, 9, generator())
    assert picked.tolist() == theirs.tolist()
    at_picks = utilities[np.arange(9), theirs]
    np.testing.assert_allclose(values[:7].numpy(), at_picks[:7], atol=1e-6)  # exact
    np.testing.assert_allclose(values[7:].numpy(), at_picks[7:], atol=0.1)  # two estimates


def test_skactiveml_coreset(skal) -> None:
    gen = generator(6)
    pool = torch.randn(400, 16, generator=gen, dtype=torch.float64)
    known = torch.randn(10, 16, generator=gen, dtype=torch.float64)
    X = np.concatenate([pool.numpy(), known.numpy()])
    y = np.concatenate([np.full(400, np.nan), np.zeros(10)])
    theirs = skal.CoreSet(random_state=0).query(X, y, batch_size=40)
    outputs = {"embeddings": pool, "labeled_embeddings": known}
    assert CoreSet().select(outputs, 40, generator()).tolist() == theirs.tolist()


def test_skactiveml_badge_first_pick_and_gradient_norms(skal) -> None:
    from skactiveml.base import SkactivemlClassifier

    class PoolProbs(SkactivemlClassifier):
        """Returns (probabilities, embeddings) of the pool, as Badge expects."""

        def __init__(self, probs=None, classes=None, missing_label=np.nan):
            super().__init__(classes=classes, missing_label=missing_label)
            self.probs = probs

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X):
            return self.probs, X

    probs = random_probs(300, 5, seed=7)
    h = torch.randn(300, 8, generator=generator(7), dtype=torch.float64)
    clf = PoolProbs(probs.numpy(), classes=np.arange(5))
    theirs, utilities = skal.Badge(random_state=0).query(
        h.numpy(), np.full(300, np.nan), clf=clf, fit_clf=False, batch_size=5, return_utilities=True
    )
    norms = GradientEmbeddings(probs, h).sq_norms
    np.testing.assert_allclose((norms / norms.sum()).numpy(), utilities[0], rtol=1e-9)
    ours = BADGE().select({"probs": probs, "embeddings": h}, 5, generator())
    assert ours[0] == theirs[0]


def test_skactiveml_typiclust(skal) -> None:
    gen = generator(8)
    sizes = [40, 35, 30, 25, 20, 15]
    centers = 100 * torch.eye(8, dtype=torch.float64)[:6]
    points = torch.cat(
        [
            centers[i] + torch.randn(n, 8, generator=gen, dtype=torch.float64)
            for i, n in enumerate(sizes)
        ]
    )
    labeled = [0, 40 + 35 + 30]  # one in the first blob, one in the fourth
    pool = [i for i in range(len(points)) if i not in labeled]
    y = np.full(len(points), np.nan)
    y[labeled] = 0
    theirs = skal.TypiClust(random_state=0, k=5).query(points.numpy(), y, batch_size=4)
    outputs = {"embeddings": points[pool], "labeled_embeddings": points[labeled]}
    ours = TypiClust(neighbors=5).select(outputs, 4, generator())
    assert [pool[i] for i in ours.tolist()] == theirs.tolist()


def test_skactiveml_typiclust_beyond_500_clusters(skal) -> None:
    """Both use L + k = 505 clusters (no cap): the same most typical item of each blob."""
    from threadpoolctl import threadpool_limits

    gen = generator(10)
    centers = 100 * torch.randn(505, 8, generator=gen, dtype=torch.float64)
    points = centers.repeat_interleave(4, 0)
    points += torch.randn(points.shape, generator=gen, dtype=torch.float64)
    labeled = np.arange(300) * 4  # one item of each of blobs 0..299
    pool = np.setdiff1d(np.arange(len(points)), labeled)
    y = np.full(len(points), np.nan)
    y[labeled] = 0
    with threadpool_limits(1):  # scikit-learn's KMeans; 2 BLAS threads stall on busy cores
        theirs = skal.TypiClust(random_state=0, k=2).query(points.numpy(), y, batch_size=205)
    outputs = {"embeddings": points[pool], "labeled_embeddings": points[labeled]}
    ours = pool[TypiClust(neighbors=2).select(outputs, 205, generator()).numpy()]
    assert sorted(ours.tolist()) == sorted(theirs.tolist())
    assert sorted((ours // 4).tolist()) == list(range(300, 505))


def test_skactiveml_committee_measures(skal) -> None:
    committee = random_probs(7, 250, 4, seed=9)
    votes = committee.argmax(-1).T.numpy()  # (N, members)
    outputs = {"committee_probs": committee}
    np.testing.assert_allclose(
        VoteEntropy().scores(outputs).numpy(), skal.vote_entropy(votes, classes=np.arange(4))
    )
    np.testing.assert_allclose(
        KLDisagreement().scores(outputs).numpy(),
        skal.average_kl_divergence(committee.numpy().copy()),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        VariationRatios().scores({"mc_probs": committee}).numpy(), skal.variation_ratios(votes)
    )
