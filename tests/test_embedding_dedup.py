"""The ``dedup`` scorer on real alt-texts with planted duplicates, decontamination
against an evaluation set, its resume state and its errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from autoplat.core.curation import bare_context, run_scorer
from autoplat.core.errors import ConfigError, DataError
from autoplat.core.interfaces import Chunk
from autoplat.plugins.embedders import Hashing
from autoplat.plugins.scorers.embedding.dedup import Dedup
from autoplat.testing import ScorerContract, embedded_chunks, embedding_context, write_texts

ALT_TEXTS = Path(__file__).parents[1] / "examples/data/alt_texts_10k.parquet"
THRESHOLD = 0.8  # hashing-embedder cosine: light edits stay above it (checked below)


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


def edit(text: str, rng: random.Random) -> str:
    """A light edit: case, a plural or doubled letter, punctuation."""
    words = text.split()
    at = rng.randrange(len(words))
    change = rng.choice(["upper", "plural", "dot"])
    if change == "upper":
        words[at] = words[at].upper()
    elif change == "plural":
        words[at] += "s"
    return " ".join(words) + (" ." if change == "dot" else "")


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    texts = pq.read_table(ALT_TEXTS, columns=["TEXT"]).column("TEXT").to_pylist()
    return list(dict.fromkeys(texts))  # the file holds a few exact duplicates


@pytest.fixture(scope="module")
def planted(real_texts: list[str]):
    """1,000 real captions with no natural near-duplicate at THRESHOLD (checked by brute
    force), then exact and lightly edited copies of some of them: the texts and the
    component (the lowest id of its group) each record must get."""
    embed = Hashing().embed
    pool = [t for t in real_texts if len(t.split()) >= 4][:1100]
    x = embed(pool)
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    keep, taken = [], np.zeros(len(pool), bool)
    for i in range(len(pool)):  # greedily skip captions near one already taken
        if not (sims[i, taken] > THRESHOLD - 0.05).any():
            keep.append(i)
            taken[i] = True
    base = [pool[i] for i in keep[:1000]]
    assert len(base) == 1000
    rng = random.Random(0)
    texts, group = list(base), list(range(1000))
    for source in rng.sample(range(1000), 200):
        kinds = rng.choice([["copy"], ["edit"], ["copy", "edit"], ["edit", "edit"]])
        for kind in kinds:
            texts.append(base[source] if kind == "copy" else edit(base[source], rng))
            group.append(source)
    order = list(range(1000, len(texts)))
    rng.shuffle(order)  # copies scattered after the originals
    texts = texts[:1000] + [texts[i] for i in order]
    group = np.array(group[:1000] + [group[i] for i in order])
    return texts, group


class TestDedupContract(ScorerContract):
    @pytest.fixture
    def make_scorer(self):
        return lambda: Dedup(Dedup.Options(k=4, threshold=0.9), seed=0)

    @pytest.fixture
    def context(self, tmp_path):
        return embedding_context(tmp_path)


class TestDedupAgainstContract(ScorerContract):
    @pytest.fixture
    def make_scorer(self, tmp_path):
        path = write_texts(tmp_path / "eval.parquet", ["a photo of a dog", "click here"])
        options = Dedup.Options(k=4, threshold=0.9, against=str(path))
        return lambda: Dedup(options, seed=0)

    @pytest.fixture
    def context(self, tmp_path):
        return embedding_context(tmp_path)


def test_edits_stay_above_threshold(planted) -> None:
    texts, group = planted
    x = Hashing().embed(texts)
    dup = np.flatnonzero(np.arange(len(texts)) != group)
    sims = (x[dup] * x[group[dup]]).sum(1)
    assert sims.min() > THRESHOLD + 0.02, "an edit moved a copy too far: the test is not exact"


@pytest.mark.parametrize("index", ["auto", "exact", "flat", "ivf"])
def test_finds_exactly_the_planted_groups(planted, tmp_path, index: str) -> None:
    texts, group = planted
    x = Hashing().embed(texts)
    options = Dedup.Options(k=8, threshold=THRESHOLD, index=index, nlist=16, nprobe=4)
    scorer = Dedup(options, seed=0)
    columns = run_scorer(scorer, embedded_chunks(x, 333), embedding_context(tmp_path))
    np.testing.assert_array_equal(columns["component"], group)
    np.testing.assert_array_equal(columns["keep"], np.arange(len(texts)) == group)
    assert columns["keep"].sum() == 1000
    dup = group != np.arange(len(texts))
    assert (columns["max_sim"][dup] > THRESHOLD).all()
    summary = scorer.summary()
    assert summary["removed"] == len(texts) - 1000
    assert summary["duplicate_groups"] == 200
    assert summary["index"] == {"auto": "exact", "exact": "exact"}.get(index, summary["index"])


@pytest.mark.parametrize("tile", [(7, 5), (64, 1000), (2048, 8192)])
def test_exact_edges_are_each_rows_k_most_similar(monkeypatch, tile) -> None:
    """Tiles of any shape give every row its k most similar others above the threshold
    (ties to the lowest column) and its largest similarity: brute force agrees."""
    from autoplat.plugins.scorers.embedding import dedup

    monkeypatch.setattr(dedup, "TILE_ROWS", tile[0])
    monkeypatch.setattr(dedup, "TILE_COLS", tile[1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    x[150:] = x[:150]  # exact copies: ties
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows, cols, best = dedup.exact_edges(x, 4, 0.5)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    want = set()
    for r in range(len(x)):
        above = np.flatnonzero(sims[r] > 0.5)
        above = above[np.lexsort((above, -sims[r, above]))][:4]
        want |= {(r, int(c)) for c in above}
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == want
    assert len(rows) == len(want) and max(np.bincount(rows)) == 4  # the limit did bite
    np.testing.assert_allclose(best, sims.max(axis=1), atol=1e-6)
    assert dedup.exact_edges(x[:1], 4, 0.5)[2].tolist() == [-1.0]
    assert [len(a) for a in dedup.exact_edges(x[:0], 4, 0.5)] == [0, 0, 0]


def test_chunking_and_threshold(planted, tmp_path) -> None:
    texts, _ = planted
    x = Hashing().embed(texts)
    runs = [
        run_scorer(
            Dedup(Dedup.Options(threshold=THRESHOLD)),
            embedded_chunks(x, size),
            embedding_context(tmp_path),
        )
        for size in (len(x), 97, 1000)
    ]
    for other in runs[1:]:
        for name in runs[0]:
            np.testing.assert_array_equal(other[name], runs[0][name], err_msg=name)
    exact = run_scorer(
        Dedup(Dedup.Options(threshold=0.99999)),
        embedded_chunks(x, 500),
        embedding_context(tmp_path),
    )
    # the embedder lower-cases and splits on white space: such edits are exact copies
    lower = [" ".join(t.lower().split()) for t in texts]
    assert (~exact["keep"]).sum() == len(lower) - len(set(lower))
    first = {t: i for i, t in reversed(list(enumerate(lower)))}
    np.testing.assert_array_equal(exact["component"], [first[t] for t in lower])


def test_against_evaluation_set(real_texts, tmp_path) -> None:
    """Pool items in the evaluation set (verbatim or lightly edited) are dropped, and only
    those; eval items absent from the pool change nothing."""
    rng = random.Random(1)
    texts = [t for t in real_texts if len(t.split()) >= 4]
    pool, outside = texts[:1000], texts[5000:5050]
    leaked = sorted(rng.sample(range(1000), 50))
    eval_texts = [pool[i] if j % 2 else edit(pool[i], rng) for j, i in enumerate(leaked)]
    path = write_texts(tmp_path / "eval.parquet", eval_texts + outside)
    options = Dedup.Options(against=str(path), within=False, threshold=THRESHOLD)
    scorer = Dedup(options, seed=0)
    x = Hashing().embed(pool)
    columns = run_scorer(scorer, embedded_chunks(x, 128), embedding_context(tmp_path))
    assert set(columns) == {"eval_sim", "keep"}
    np.testing.assert_array_equal(np.flatnonzero(~columns["keep"]), leaked)
    assert scorer.summary()["against"] == {"path": str(path), "items": 100, "dropped": 50}


def test_resumes_from_state(planted, tmp_path) -> None:
    texts, group = planted
    x = Hashing().embed(texts)
    first = Dedup(Dedup.Options(threshold=THRESHOLD), seed=0)
    first.setup(embedding_context(tmp_path))
    for chunk in embedded_chunks(x, 400):
        first.fit(chunk)
    first.finish_fit()
    from autoplat.core.curation import load_states, save_states

    save_states(tmp_path, {"dedup": first.state()})
    state = load_states(tmp_path)["dedup"]
    second = Dedup(Dedup.Options(threshold=THRESHOLD), seed=0)
    second.setup(embedding_context(tmp_path))
    second.load_state(state)
    parts = [second.score(chunk)["component"] for chunk in embedded_chunks(x, 250)]
    np.testing.assert_array_equal(np.concatenate(parts), group)
    assert second.summary() == first.summary()


def test_errors(tmp_path) -> None:
    with pytest.raises(ValidationError):
        Dedup.Options(treshold=0.9)  # a typo is refused
    with pytest.raises(ValidationError):
        Dedup.Options(threshold=1.5)
    scorer = Dedup(Dedup.Options(), seed=0)
    with pytest.raises(ConfigError, match="embedder"):
        run_scorer(scorer, [Chunk(np.arange(2), text=["a", "b"])], bare_context(tmp_path))
    missing = Dedup(Dedup.Options(against=str(tmp_path / "nope.parquet")), seed=0)
    with pytest.raises(DataError, match="nope.parquet"):
        missing.setup(embedding_context(tmp_path))
    scorer = Dedup(Dedup.Options(), seed=0)
    x = Hashing().embed(["one text", "another"])
    run_scorer(scorer, embedded_chunks(x, 2), embedding_context(tmp_path))
    with pytest.raises(DataError, match="record 7"):
        scorer.score(Chunk(np.array([7]), embeddings=x[:1]))
