"""MoDE data experts: curate captions into experts, train one model per expert through
`platform search` over `dataset.expert`, and evaluate them alone and ensembled."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from autoplat.core.errors import DataError
from autoplat.core.space import split_dataset_params
from autoplat.plugins.datasets.image_captions import ImageCaptions, ImageCaptionsOptions
from autoplat.plugins.datasets.shapes import write_caption_table
from autoplat.plugins.embedders import Hashing
from autoplat.plugins.scorers.embedding.common import assign, kmeans, unit
from autoplat.plugins.scorers.embedding.mode import (
    balanced_assign,
    balanced_kmeans,
    paper_weights,
    task_weights,
)
from autoplat.testing import run_platform

N = 240
CURATE = """
[study]
name = "captions"
seed = 0

[input]
path = "{table}"
text = "caption"

[output]
dir = "{out}"

[embedder]
name = "hashing"

[scorers.mode]
fine_clusters = 8
experts = 2
class_template = "a photo of a {{}}"
"""
SEARCH = """
[study]
name = "experts"
trials = 2
seed = 0
metric = "val_recall_at_1"
checkpoints = "all"

[architecture]
name = "clip"

[dataset]
name = "image-captions"
path = "{table}"
experts = "{scores}"
image_size = 16

[space]
dataset.expert = [0, 1]
image_tower = "cnn"
image_depth = 1
image_width = 8
text_depth = 1
text_width = 16
text_heads = 2
embed_dim = 16
temperature_init = 0.07
lr = 3e-3
batch_size = 64
epochs = 1

[strategy]
name = "grid"

[resources]
cpus_per_trial = 1
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_caption_table(tmp_path_factory.mktemp("shapes"), N, seed=0, image_size=16)


def write_scores(path: Path, ids: np.ndarray, experts: np.ndarray) -> Path:
    pq.write_table(pa.table({"id": ids, "mode.expert": experts, "keep": ids >= 0}), path)
    return path


def test_split_dataset_params() -> None:
    data, rest = split_dataset_params({"dataset.expert": 1, "lr": 0.1, "dataset_x": 2})
    assert data == {"expert": 1} and rest == {"lr": 0.1, "dataset_x": 2}


def test_expert_trains_on_its_rows_only_and_keeps_val_and_test(table, tmp_path) -> None:
    labels = [row["label"] for row in csv.DictReader(table.read_text().splitlines())]
    experts = np.array([int(label == "circle") for label in labels])  # 1: the circles
    ids = np.arange(N)[::-1].copy()  # ids, not file order, map scores to table rows
    scores = write_scores(tmp_path / "s.parquet", ids, experts[ids])
    dataset = ImageCaptions()
    full = dataset.load(ImageCaptionsOptions(path=table), seed=0)
    circle = full.spec.label_names.index("circle")
    trained = []
    for expert in (0, 1):
        options = ImageCaptionsOptions(path=table, experts=scores, expert=expert)
        splits = dataset.load(options, seed=0)
        for mine, theirs in ((splits.val, full.val), (splits.test, full.test)):
            assert np.array_equal(mine[0], theirs[0]) and np.array_equal(mine[2], theirs[2])
        train_labels = splits.train[2].numpy()
        assert len(train_labels) and ((train_labels == circle) == bool(expert)).all()
        trained.append(len(train_labels))
    assert sum(trained) == len(full.train[0])  # the experts partition the train rows
    everything = dataset.load(ImageCaptionsOptions(path=table, experts=scores), seed=0)
    assert len(everything.train[0]) == len(full.train[0])  # experts without expert: all rows


def test_bad_experts_files_name_the_file(table, tmp_path) -> None:
    dataset = ImageCaptions()
    short = write_scores(tmp_path / "short.parquet", np.arange(N - 1), np.zeros(N - 1, int))
    with pytest.raises(DataError, match=rf"short.parquet: scores of {N - 1} records.*{N} rows"):
        dataset.load(ImageCaptionsOptions(path=table, experts=short, expert=0), 0)
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": np.arange(N), "dedup.keep": np.ones(N, bool)}), other)
    with pytest.raises(DataError, match="no 'mode.expert' column"):
        dataset.load(ImageCaptionsOptions(path=table, experts=other, expert=0), 0)
    scores = write_scores(tmp_path / "s.parquet", np.arange(N), np.zeros(N, int))
    with pytest.raises(DataError, match="expert 4 has no training rows.*experts are 0"):
        dataset.load(ImageCaptionsOptions(path=table, experts=scores, expert=4), 0)
    with pytest.raises(DataError, match="experts file .*nothing.parquet does not exist"):
        dataset.load(ImageCaptionsOptions(path=table, experts=tmp_path / "nothing.parquet"), 0)
    with pytest.raises(ValidationError, match="expert needs experts"):
        ImageCaptionsOptions(path=table, expert=0)


@pytest.mark.slow
def test_curate_search_and_evaluate_experts(table, tmp_path, ray_address) -> None:
    url = f"sqlite:///{tmp_path / 'mode.db'}"
    curate = tmp_path / "curate.toml"
    curate.write_text(CURATE.format(table=table, out=tmp_path / "curated"))
    done = run_platform("curate", str(curate), "--storage", url)
    assert done.returncode == 0, done.stderr
    scores = tmp_path / "curated" / "scores.parquet"
    search = tmp_path / "search.toml"
    search.write_text(SEARCH.format(table=table, scores=scores))
    done = run_platform("search", str(search), "--storage", url, "--address", ray_address)
    assert done.returncode == 0, done.stderr
    trials = json.loads(run_platform("show", "experts", "--storage", url, "--json").stdout)
    assert sorted(t["params"]["dataset.expert"] for t in trials["trials"]) == [0, 1]

    task = "circle,square"
    shown = run_platform(
        "experts", "experts", "--curation", "captions", "--storage", url, "--classes", task
    )
    assert shown.returncode == 0, shown.stderr
    report = json.loads(
        run_platform(
            "experts", "experts", "--curation", "captions", "--storage", url,
            "--classes", task, "--json",
        ).stdout
    )  # fmt: skip
    assert report["classes"] == ["circle", "square"] and "MoDE ensemble" in shown.stdout
    # the test images of the task's classes only
    splits = ImageCaptions().load(ImageCaptionsOptions(path=table, image_size=16), 0)
    wanted = [splits.spec.label_names.index(name) for name in ("circle", "square")]
    assert report["test_images"] == int(np.isin(splits.test[2].numpy(), wanted).sum())
    # the weights are MoDE's for the task: the class names against the stored centers
    curated = json.loads(run_platform("show", "captions", "--storage", url, "--json").stdout)
    (mode,) = [t for t in curated["trials"] if t["params"]["scorer"] == "mode"]
    names = Hashing(Hashing.Options(), 0).embed(["a photo of a circle", "a photo of a square"])
    summary = mode["attrs"]["summary"]
    assert summary["weighting"] == "paper"
    want = task_weights(summary, names)
    got = [e["weight"] for e in report["experts"]]
    assert np.allclose(got, want, atol=1e-6) and abs(sum(got) - 1) < 1e-6
    for key in ("uniform_accuracy", "weighted_accuracy"):
        assert 0.0 <= report[key] <= 1.0
    assert [e["expert"] for e in report["experts"]] == [0, 1]

    bad = run_platform("experts", "captions", "--curation", "captions", "--storage", url)
    assert bad.returncode == 2 and "no completed trial with param 'dataset.expert'" in bad.stderr
    bad = run_platform("experts", "experts", "--curation", "experts", "--storage", url)
    assert bad.returncode == 2 and "--curation takes the `platform curate` study" in bad.stderr
    assert "Traceback" not in bad.stderr


# -- MoDE's weighting rule and balanced k-means (fast, no Ray) ---------------------------
def test_paper_weights_by_hand() -> None:
    """post_report_ensemble.py: nearest fine center per class (Euclidean), then
    softmax(sum_c exp((a - d_c) m) / 8) over experts; a = exp(0.5 - sqrt(C)) for C < 10."""
    fine = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])  # fine center i is in expert i
    classes = np.array([[2.0, 0.0], [0.0, 1.0]])  # unit length: d = 0 to f0, d = 1 to f1
    a, m = math.exp(0.5 - math.sqrt(2)), 5 * math.log10(10)
    # top-1: each class counts for its nearest fine center only, so expert 2 scores 0
    scores = [math.exp(a * m), math.exp((a - 1) * m), 0.0]
    z = sum(math.exp(s / 8) for s in scores)
    want = [math.exp(s / 8) / z for s in scores]
    got = paper_weights(fine, np.array([0, 1, 2]), classes)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    np.testing.assert_allclose(got, [0.5575, 0.2219, 0.2205], atol=1e-4)
    # 250 classes: a = 0 and m = 5 log10(250 - 200)
    many = paper_weights(fine, np.array([0, 1, 2]), np.tile([[0.0, 1.0]], (250, 1)))
    s1 = 250 * math.exp(-5 * math.log10(50))
    z = 2 + math.exp(s1 / 8)
    np.testing.assert_allclose(many, [1 / z, math.exp(s1 / 8) / z, 1 / z], rtol=1e-9)


def test_balanced_kmeans_sizes_and_restarts() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.3, (150, 2)), rng.normal(3, 1, (50, 2))])
    d2 = ((x[:, None] - x[None, :4]) ** 2).sum(-1)
    assert np.bincount(balanced_assign(d2), minlength=4).max() <= 50  # ceil(200 / 4)
    centers, inertia = balanced_kmeans(x, 4, seed=0, restarts=4)
    labels = balanced_assign(((x[:, None] - centers[None]) ** 2).sum(-1))
    assert np.bincount(labels, minlength=4).max() <= 50
    # plain nearest-center k-means would give the dense blob most points: balanced splits it
    singles = [balanced_kmeans(x, 4, seed=7919 * r, restarts=1)[1] for r in range(4)]
    assert inertia == pytest.approx(min(singles)) and max(singles) > inertia + 1


def test_balanced_two_level_separates_topics_a_single_start_merged() -> None:
    from autoplat.plugins.embedders import Hashing as Embedder

    words = [
        "used ford focus toyota yaris peugeot diesel hatchback mileage sale dealer estate",
        "dog puppy cat kitten leash collar kennel treats grooming paws whiskers terrier",
        "recipe chicken curry pasta baked oven garlic sauce dinner vegetarian spicy dessert",
        "dress women summer floral sleeve cotton skirt blouse denim jacket boots elegant",
    ]
    rng = np.random.default_rng(0)  # 120 five-word captions a topic, then shuffled
    topic = np.repeat(np.arange(4), 120)
    texts = [" ".join(rng.choice(words[t].split(), size=5, replace=False)) for t in topic]
    order = rng.permutation(len(texts))
    texts, topic = [texts[i] for i in order], topic[order]
    x = unit(Embedder().embed(texts))

    def owners(fine: np.ndarray, coarse: np.ndarray) -> set[int]:
        expert = assign(coarse, fine)[0][assign(fine, x)[0]]
        return {int(np.bincount(expert[topic == t]).argmax()) for t in range(4)}

    seed = 11  # the earlier single-start, unbalanced k-means merges two topics here
    old_fine = kmeans(x, 16, seed, 20, spherical=True, init="kmeans++")
    assert len(owners(old_fine, kmeans(old_fine, 4, seed + 1, 20, True, "kmeans++"))) == 3
    fine, _ = balanced_kmeans(x, 16, seed)
    assert len(owners(fine, balanced_kmeans(fine, 4, seed + 1)[0])) == 4
