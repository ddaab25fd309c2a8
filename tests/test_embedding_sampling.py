"""The ``retrieval``, ``balanced`` and ``mode`` scorers: known answers on real alt-texts
and on captions about distinct topics."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoplat.core.curation import run_scorer
from autoplat.core.errors import ConfigError
from autoplat.plugins.embedders import Hashing
from autoplat.plugins.scorers.embedding.balanced import Balanced, split_budget
from autoplat.plugins.scorers.embedding.mode import MoDE, expert_weights
from autoplat.plugins.scorers.embedding.retrieval import Retrieval
from autoplat.testing import ScorerContract, embedded_chunks, embedding_context, write_texts

ALT_TEXTS = Path(__file__).parents[1] / "examples/data/alt_texts_10k.parquet"

# captions about eight topics, each from its own words
TOPICS = {
    "cars": "used ford focus toyota yaris peugeot diesel hatchback mileage sale dealer estate",
    "pets": "dog puppy cat kitten leash collar kennel treats grooming paws whiskers terrier",
    "food": "recipe chicken curry pasta baked oven garlic sauce dinner vegetarian spicy dessert",
    "fashion": "dress women summer floral sleeve cotton skirt blouse denim jacket boots elegant",
    "travel": "beach hotel island sunset resort holiday ocean palm tropical cruise villa lagoon",
    "music": "album guitar concert vinyl band song acoustic jazz orchestra singer drums tour",
    "garden": "roses tulips garden shrub compost seeds lawn hedge greenhouse bulbs pruning soil",
    "tech": "laptop keyboard processor gaming monitor wireless charger smartphone tablet usb",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """faiss and BLAS on one thread: the test workers share two cores."""
    import faiss
    from threadpoolctl import threadpool_limits

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    with threadpool_limits(1):
        yield
    faiss.omp_set_num_threads(threads)


def captions(counts: list[int], seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``counts[t]`` captions of five words of topic ``t`` each, shuffled; and the topics."""
    rng = np.random.default_rng(seed)
    texts, topic = [], []
    for t, (words, count) in enumerate(zip(TOPICS.values(), counts, strict=False)):
        for _ in range(count):
            texts.append(" ".join(rng.choice(words.split(), size=5, replace=False)))
            topic.append(t)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], np.array(topic)[order]


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    texts = pq.read_table(ALT_TEXTS, columns=["TEXT"]).column("TEXT").to_pylist()
    return [t for t in dict.fromkeys(texts) if len(t.split()) >= 4]


# -- contracts ---------------------------------------------------------------------------
class EmbeddingContract(ScorerContract):
    @pytest.fixture
    def context(self, tmp_path):
        return embedding_context(tmp_path)


class TestRetrievalKnnContract(EmbeddingContract):
    @pytest.fixture
    def make_scorer(self, tmp_path):
        seeds = write_texts(tmp_path / "seeds.parquet", ["a photo of a dog", "logo"])
        return lambda: Retrieval(Retrieval.Options(seeds=str(seeds), k=3), seed=0)


class TestRetrievalClusterContract(EmbeddingContract):
    @pytest.fixture
    def make_scorer(self, tmp_path):
        seeds = write_texts(tmp_path / "seeds.parquet", ["a photo of a dog"])
        options = Retrieval.Options(seeds=str(seeds), mode="cluster", clusters=4)
        return lambda: Retrieval(options, seed=0)


class TestBalancedContract(EmbeddingContract):
    @pytest.fixture
    def make_scorer(self):
        return lambda: Balanced(Balanced.Options(target=10, levels=[8, 3]), seed=3)


class TestMoDEContract(EmbeddingContract):
    @pytest.fixture
    def make_scorer(self):
        options = MoDE.Options(fine_clusters=8, experts=3, task_classes=["dog", "cat"])
        return lambda: MoDE(options, seed=0)


# -- retrieval -----------------------------------------------------------------------------
def test_retrieval_finds_the_seeds_copies_first(real_texts, tmp_path) -> None:
    """Seeds are edited copies of pool captions: each seed's nearest pool record is its
    copy (rank 0, retrieved by that seed), and ``k`` records per seed at most are kept."""
    rng = random.Random(0)
    pool = real_texts[:2000]
    picked = rng.sample(range(2000), 30)
    seeds = [pool[i].upper() + " !" for i in picked]
    path = write_texts(tmp_path / "seeds.parquet", seeds)
    x = Hashing().embed(pool)
    scorer = Retrieval(Retrieval.Options(seeds=str(path), k=3), seed=0)
    columns = run_scorer(scorer, embedded_chunks(x, 300), embedding_context(tmp_path))
    np.testing.assert_array_equal(columns["rank"][picked], 0)
    np.testing.assert_array_equal(columns["seed"][picked], np.arange(30))
    assert (columns["seed_sim"][picked] > 0.9).all()
    assert 30 < columns["keep"].sum() <= 90
    assert (columns["keep"] == (columns["rank"] >= 0)).all()
    strict = Retrieval(Retrieval.Options(seeds=str(path), k=3, min_sim=0.9), seed=0)
    columns = run_scorer(strict, embedded_chunks(x, 500), embedding_context(tmp_path))
    np.testing.assert_array_equal(np.flatnonzero(columns["keep"]), sorted(picked))


def test_retrieval_by_cluster_keeps_the_seeds_topics(tmp_path) -> None:
    """Twice as many clusters as topics: what is kept shares a cluster with a seed, so it
    is on the seeds' topics (pets, music), and covers at least half of each."""
    texts, topic = captions([150] * 8)
    seeds = ["puppy kitten collar", "dog leash treats", "jazz vinyl album", "guitar concert band"]
    path = write_texts(tmp_path / "seeds.parquet", seeds)
    options = Retrieval.Options(seeds=str(path), mode="cluster", clusters=16)
    columns = run_scorer(
        Retrieval(options, seed=0),
        embedded_chunks(Hashing().embed(texts), 250),
        embedding_context(tmp_path),
    )
    kept = np.bincount(topic[columns["keep"]], minlength=8)
    assert kept.sum() == kept[[1, 5]].sum(), kept
    assert (kept[[1, 5]] >= 75).all(), kept
    seed_clusters = set(columns["cluster"][columns["keep"]])
    assert len(seed_clusters) <= 4
    assert (columns["keep"] == np.isin(columns["cluster"], list(seed_clusters))).all()


# -- balanced -----------------------------------------------------------------------------
def test_split_budget() -> None:
    rng = np.random.default_rng(0)
    share = split_budget(10, np.array([1, 100, 2, 100]), rng)  # level 3, one left over
    assert share.tolist() in ([1, 4, 2, 3], [1, 3, 2, 4])
    np.testing.assert_array_equal(split_budget(500, np.array([3, 4]), rng), [3, 4])
    share = split_budget(7, np.array([5, 5, 5]), rng)
    assert share.sum() == 7 and sorted(share) == [2, 2, 3]
    np.testing.assert_array_equal(split_budget(0, np.array([5, 0]), rng), [0, 0])


def test_balanced_flattens_a_skewed_corpus(tmp_path) -> None:
    """Eight topics with halving sizes (half the corpus is the first): a balanced sample
    hits the target, shrinks the largest topic's share and grows the small topics'."""
    counts = [1600, 800, 400, 200, 100, 50, 30, 20]
    texts, topic = captions(counts)
    x = Hashing().embed(texts)
    before = np.bincount(topic) / len(topic)
    largest, small = [], []
    for seed in range(3):
        options = Balanced.Options(target=400, levels=[100, 20], resample_steps=3)
        columns = run_scorer(
            Balanced(options, seed=seed), embedded_chunks(x, 1000), embedding_context(tmp_path)
        )
        keep = columns["keep"]
        assert keep.sum() == 400
        after = np.bincount(topic[keep], minlength=8) / keep.sum()
        assert (after > 0).all(), after
        largest.append(after.max())
        small.append(after[4:].sum())
    assert before.max() == 0.5
    assert np.mean(largest) < 0.35, largest  # random sampling: 0.5
    assert np.mean(small) > 3 * before[4:].sum(), small  # random sampling: 0.0625


def test_balanced_edges(tmp_path) -> None:
    texts, _ = captions([20] * 8)
    x = Hashing().embed(texts)
    everything = run_scorer(
        Balanced(Balanced.Options(target=10_000, levels=[10, 3]), seed=0), embedded_chunks(x, 50)
    )
    assert everything["keep"].all()
    nothing = run_scorer(
        Balanced(Balanced.Options(target=0, levels=[10]), seed=0), embedded_chunks(x, 50)
    )
    assert not nothing["keep"].any()
    closest = Balanced(Balanced.Options(target=16, levels=[8], sample="closest"), seed=0)
    assert run_scorer(closest, embedded_chunks(x, 64))["keep"].sum() == 16
    with pytest.raises(ConfigError, match="resample_points"):
        Balanced(Balanced.Options(target=1, levels=[4, 2], resample_points=[3]))


# -- MoDE ---------------------------------------------------------------------------------
def test_mode_topics_get_their_own_experts(tmp_path) -> None:
    texts, topic = captions([120] * 4)
    x = Hashing().embed(texts)
    options = MoDE.Options(
        fine_clusters=16,
        experts=4,
        task_classes=["dog", "cat", "puppy"],
        weighting="coarse-softmax",
    )
    scorer = MoDE(options, seed=0)
    columns = run_scorer(scorer, embedded_chunks(x, 100), embedding_context(tmp_path))
    expert = columns["expert"]
    # each topic sits in one expert, and the four experts differ
    owners = [np.bincount(expert[topic == t], minlength=4).argmax() for t in range(4)]
    assert sorted(owners) == [0, 1, 2, 3]
    purity = [np.mean(expert[topic == t] == owners[t]) for t in range(4)]
    assert min(purity) >= 0.95, purity
    # fine clusters nest in experts
    summary = scorer.summary()
    fine_to_expert = np.array(summary["fine_to_expert"])
    np.testing.assert_array_equal(fine_to_expert[columns["fine_cluster"]], expert)
    assert sum(summary["expert_sizes"]) == len(texts)
    assert np.array(summary["expert_centers"]).shape == (4, 384)
    # the weights favour the pets expert
    weights = np.array(summary["expert_weights"])
    assert weights.argmax() == owners[1] and weights.max() > 0.9, weights
    assert weights.sum() == pytest.approx(1, abs=1e-5)
    # centers survive a resume
    again = MoDE(options, seed=0)
    again.setup(embedding_context(tmp_path))
    again.load_state(scorer.state())
    assert again.summary() == summary


def test_expert_weights() -> None:
    centers = np.eye(3, 4)
    classes = np.array([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0]])
    w = expert_weights(centers, classes, temperature=0.1)
    assert w.argmax() == 0 and w.sum() == pytest.approx(1)
    flat = expert_weights(centers, classes, temperature=1e6)
    np.testing.assert_allclose(flat, 1 / 3, atol=1e-5)
    sharp = expert_weights(centers, classes, temperature=1e-3)
    np.testing.assert_allclose(sharp, [1, 0, 0], atol=1e-6)
    with pytest.raises(ValueError):
        expert_weights(centers, classes, temperature=0)
    with pytest.raises(ConfigError, match="class_template"):
        MoDE(MoDE.Options(class_template="a photo"))
