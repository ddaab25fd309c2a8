"""MoDE data experts: curate captions into experts, train one model per expert through
`platform search` over `dataset.expert`, and evaluate them alone and ensembled."""

from __future__ import annotations

import json
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
from autoplat.plugins.scorers.embedding.mode import expert_weights
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
    labels = [line.rsplit(",", 1)[1] for line in table.read_text().splitlines()[1:]]
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
    want = expert_weights(np.array(summary["expert_centers"]), names, summary["temperature"])
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
