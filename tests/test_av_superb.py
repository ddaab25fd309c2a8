"""The AV-SUPERB-style probe suite: the av-suite data and its tasks, the av-superb
architecture (pretrain, freeze, probe), its conformance, and `platform av-superb`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from autoplat.cli import main
from autoplat.core.interfaces import Architecture, Dataset, DataSpec, Options, Splits
from autoplat.core.registry import get_registry
from autoplat.core.store import Store, TrialState
from autoplat.plugins.architectures.av_superb import (
    AVSuperb,
    fit_probe,
    mean_average_precision,
    train_av_superb,
)
from autoplat.plugins.audio.frontend import LogMel
from autoplat.plugins.av_superb_command import CHANCE, MODALITIES, TASKS, metric, suite_rows
from autoplat.plugins.datasets.av_suite import (
    EVENTS,
    PARTNER,
    SCENE,
    SCENES,
    SHOWN,
    AVSuite,
    AVSuiteOptions,
    correspondence,
)
from autoplat.testing import run_platform
from tests.test_e2e_contracts import MultiPartContract, MultiTensorContract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"n_train": 16, "n_val": 6, "n_test": 6, "duration": 0.1}
HP = {"epochs": 4, "lr": 3e-3, "batch_size": 32, "warmup_epochs": 1}
PROBE = {"probe": "mlp", "probe_hidden": 64, "probe_steps": 200}


@pytest.fixture(scope="module")
def suite() -> Splits:
    return AVSuite().load(AVSuiteOptions(n_train=300, n_val=100, n_test=150), seed=0)


# -- data ----------------------------------------------------------------------------------
def test_same_seed_same_clips_other_seed_other_clips() -> None:
    options = AVSuiteOptions(**TINY)
    first, again, other = (AVSuite().load(options, seed) for seed in (3, 3, 4))
    for name in ("train", "val", "test"):
        for a, b in zip(getattr(first, name), getattr(again, name), strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(first.train[0], other.train[0])


def test_layout_and_partners(suite: Splits) -> None:
    audio, images, labels = suite.train
    assert suite.spec.input_shape == (4000, 3, 16, 16) and suite.spec.task == "av_suite"
    assert audio.shape == (300, 4000) and images.shape == (300, 3, 16, 16)
    assert labels.shape == (300, EVENTS + 4) and EVENTS == 3 and labels.dtype == torch.int64
    assert float(audio.abs().max()) <= 1 and 0 <= float(images.min()) < float(images.max()) <= 1
    heard = labels[:, EVENTS:]
    assert ((heard.sum(1) >= 1) & (heard.sum(1) <= 2)).all()
    assert abs(float(heard.float().mean()) - CHANCE["event"]) < 0.05  # the chance mAP stated
    assert set(labels[:, SCENE].tolist()) == set(range(len(SCENES)))
    partner = labels[:, PARTNER]
    assert (partner != torch.arange(300)).all()


def audio_features(audio: torch.Tensor) -> torch.Tensor:
    """Raw audio as a probe sees it without an upstream: log-mel mean and std over time."""
    mel = LogMel(8000, 256, 128, 32)(audio)
    return torch.cat([mel.mean(dim=2), mel.std(dim=2)], dim=1)


def frame_features(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def probe_score(task: str, train: torch.Tensor, test: torch.Tensor, suite: Splits) -> float:
    ytrain, ytest = suite.train[2], suite.test[2]
    if task == "scene":
        (scores,) = fit_probe(train, ytrain[:, SCENE], [test], len(SCENES), False, PROBE, 0)
        return float((scores.argmax(1) == ytest[:, SCENE]).float().mean())
    (scores,) = fit_probe(train, ytrain[:, EVENTS:], [test], 4, True, PROBE, 0)
    return mean_average_precision(scores, ytest[:, EVENTS:])


def test_scene_is_seen_and_events_are_heard(suite: Splits) -> None:
    """Probes on raw inputs: vision names the scene, audio only its pair (indoor or
    outdoor); audio hears every event, vision sees one of them."""
    heard = [audio_features(split[0]) for split in (suite.train, suite.test)]
    seen = [frame_features(split[1]) for split in (suite.train, suite.test)]
    scene_audio, scene_visual = (probe_score("scene", *x, suite) for x in (heard, seen))
    event_audio, event_visual = (probe_score("event", *x, suite) for x in (heard, seen))
    assert scene_visual > 0.8 > scene_audio + 0.2 and scene_audio > CHANCE["scene"] + 0.1
    assert event_audio > event_visual + 0.1 and event_visual > CHANCE["event"]


def test_correspondence_needs_both_modalities(suite: Splits) -> None:
    audio, images, match = correspondence(suite.test)
    n = len(suite.test[0])
    assert match.float().mean() == 0.5 and torch.equal(audio[:n], audio[n:])  # each audio twice
    # the pair is decided by both: is the on-screen object among the heard events?
    labels = suite.test[2]
    heard = labels[:, EVENTS:].bool()
    partner = labels[:, PARTNER]
    own = labels[:, SHOWN]
    assert heard[torch.arange(n), own].all()  # matched: the object is heard
    assert not heard[torch.arange(n), own[partner]].any()  # mismatched: it is not
    assert torch.equal(images[n:], images[:n][partner])


# -- conformance ---------------------------------------------------------------------------
class TestAVSuiteContract(MultiTensorContract):
    dataset_name = "av-suite"

    @pytest.fixture
    def options(self, dataset: Dataset) -> Options:
        return dataset.Options(**TINY)


class TestAVSuperbContract(MultiPartContract):
    """The default space's corners: an audio-only random upstream (early fusion, depth 2,
    width 32) and a fused contrastive one (late fusion, depth 3, width 64)."""

    @pytest.fixture
    def splits(self) -> Splits:
        return AVSuite().load(AVSuiteOptions(**TINY), 0)

    @pytest.fixture
    def architecture(self) -> Architecture:
        return get_registry().get("architectures", "av-superb")


# -- the architecture ----------------------------------------------------------------------
def test_check_params_explains() -> None:
    arch = AVSuperb()
    spec = DataSpec("av_suite", "audio-image", (4000, 3, 16, 16), sample_rate=8000)
    assert arch.check_params({}, spec) is None
    assert "modality must be one of 'audio', 'visual', 'fused', got 'a'" in arch.check_params(
        {"modality": "a"}
    )
    assert "objective must be one of 'none', 'contrastive'" in arch.check_params(
        {"objective": "mae"}
    )
    assert "probe must be one of 'linear', 'mlp'" in arch.check_params({"probe": "deep"})
    assert "probe_steps must be" in arch.check_params({"probe_steps": 0})
    assert "image_patch 5" in arch.check_params({"image_patch": 5}, spec)
    other = DataSpec("classification", "audio-image", (4000, 3, 16, 16), 6, sample_rate=8000)
    assert 'name = "av-suite"' in arch.check_params({}, other)
    with pytest.raises(ValueError, match="unknown params colour"):
        arch.build({"colour": 1}, spec)


def test_config_time_refusals(tmp_path: Path) -> None:
    """Bad values (one bad choice in a list too) and the wrong dataset stop `platform
    search` before any trial, naming the [space] line."""
    from autoplat.core.config import load_config
    from autoplat.core.errors import ConfigError

    base = textwrap.dedent(SEARCH)
    for old, new, message in (
        ('modality = ["audio", "fused"]', 'modality = "both"', "space.modality: must be one"),
        (
            'modality = ["audio", "fused"]',
            'modality = ["audio", "both"]',
            r"bad.toml:\d+: space.modality: must be one of 'audio', 'visual', 'fused', got 'both'",
        ),
        ('name = "av-suite"', 'name = "audio-visual-events"', "cannot feed architecture"),
    ):
        path = tmp_path / "bad.toml"
        path.write_text(base.replace(old, new))
        with pytest.raises(ConfigError, match=message):
            load_config(path, get_registry())


@pytest.fixture(scope="module")
def trained(suite: Splits) -> dict[str, dict[str, float]]:
    """A fused upstream, pretrained contrastively and random, each probed: final metrics."""
    out = {}
    for objective in ("contrastive", "none"):
        torch.manual_seed(0)
        params = {"modality": "fused", "objective": objective, "probe_steps": 200}
        model = AVSuperb().build(params, suite.spec)
        reports: list[tuple[int, dict[str, float]]] = []
        record = reports.append
        train_av_superb(model, suite, HP, lambda step, m, add=record: add((step, m)), seed=0)
        assert reports[-1][0] == HP["epochs"]
        out[objective] = reports[-1][1] | {"reports": len(reports), "first": reports[0][1]}
    return out


@pytest.mark.slow  # trains for seconds
def test_a_real_trial_probes_every_task_and_modality(trained) -> None:
    metrics = trained["contrastive"]
    assert metrics["reports"] == HP["epochs"]
    assert metrics["train_loss"] < metrics["first"]["train_loss"]  # pretraining learns
    for split in ("val", "test"):
        for task in TASKS:
            for modality in MODALITIES:
                assert 0 <= metrics[metric(split, task, modality)] <= 1
        own = [metrics[metric(split, task, "fused")] for task in TASKS]
        assert metrics[f"{split}_superb_score"] == pytest.approx(sum(own) / 3)
    # each task's intended modality beats chance, and the modalities rank as designed
    for metrics in trained.values():
        score = {(t, m): metrics[metric("test", t, m)] for t in TASKS for m in MODALITIES}
        assert score["scene", "visual"] > CHANCE["scene"] + 0.4 > score["scene", "audio"]
        assert score["event", "audio"] > max(CHANCE["event"] + 0.2, score["event", "visual"])
        assert score["corr", "fused"] > CHANCE["corr"] + 0.05
        assert abs(score["corr", "audio"] - CHANCE["corr"]) < 1e-6  # each audio in both classes


@pytest.mark.slow  # trains for seconds
def test_the_random_baseline_reports_once(trained) -> None:
    assert trained["none"]["reports"] == 1 and "train_loss" not in trained["none"]


def test_unimodal_upstreams_have_one_tower_and_one_part(suite: Splits) -> None:
    arch = AVSuperb()
    for modality, tower in (("audio", "audio_tokens"), ("visual", "image_tokens")):
        model = arch.build({"modality": modality}, suite.spec)
        assert list(arch.onnx_parts(model.eval(), suite)) == [modality]
        towers = {name.split(".")[1] for name, _ in model.named_parameters() if "encoder" in name}
        assert towers & {"audio_tokens", "image_tokens"} == {tower}
    fused = arch.build({"modality": "fused"}, suite.spec)
    assert list(arch.onnx_parts(fused.eval(), suite)) == list(MODALITIES)


# -- the summary table and `platform av-superb` ----------------------------------------------
def seed_store(url: str) -> None:
    """A real SQLite store holding an av-superb study: a fused, an audio and a visual
    upstream (complete), a running trial and one of another study."""
    store = Store(url)
    config = json.dumps({"architecture": {"name": "av-superb"}, "dataset": {"name": "av-suite"}})
    study = store.create_study(
        "suite", kind="search", direction="maximize", metric="val_superb_score", config=config
    )
    scores = {  # (trial params, {modality: (scene, event, corr)})
        "fused": {"audio": (0.5, 0.9, 0.5), "visual": (0.99, 0.5, 0.5), "fused": (0.95, 0.8, 0.7)},
        "audio": {"audio": (0.45, 0.96, 0.5)},
        "visual": {"visual": (0.98, 0.45, 0.52)},
    }
    for upstream, rows in scores.items():
        trial = store.start_trial(study.id, {"modality": upstream, "objective": "contrastive"})
        metrics = {
            metric("test", task, modality): value
            for modality, values in rows.items()
            for task, value in zip(TASKS, values, strict=True)
        }
        store.add_metrics(trial.id, 8, metrics)
        store.finish_trial(trial.id, TrialState.COMPLETE, value=0.7)
    store.start_trial(study.id, {"modality": "fused", "objective": "none"})  # still running
    other = store.create_study(
        "mlp-study", kind="search", config=json.dumps({"architecture": {"name": "mlp"}})
    )
    assert other.id != study.id


def test_rows_are_ranked_per_task_and_overall(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/suite.db"
    seed_store(url)
    store = Store(url, create=False)
    rows = suite_rows(store.summary(store.get_study("suite")))
    got = [(r["trial"], r["modality"], r["ranks"], r["mean_rank"]) for r in rows]
    assert got == [
        (0, "fused", {"scene": 3, "event": 3, "corr": 1}, pytest.approx(7 / 3)),
        (0, "visual", {"scene": 1, "event": 4, "corr": 3}, pytest.approx(8 / 3)),
        (2, "visual", {"scene": 2, "event": 5, "corr": 2}, 3.0),
        (1, "audio", {"scene": 5, "event": 1, "corr": 3}, 3.0),
        (0, "audio", {"scene": 4, "event": 2, "corr": 3}, 3.0),
    ]  # ties on mean rank: the higher mean score first
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[2]["mean_score"] > rows[3]["mean_score"] > rows[4]["mean_score"]


def test_command_prints_the_table_and_json(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line per row
    url = f"sqlite:///{tmp_path}/suite.db"
    seed_store(url)
    assert main(["av-superb", "suite", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "AV-SUPERB-style suite" in out and "0.700 (1)" in out and "chance: scene 0.25" in out
    assert main(["av-superb", "suite", "--storage", url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["trial"], r["modality"]) for r in rows][:2] == [(0, "fused"), (0, "visual")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no study named 'nope'"),
        (["mlp-study"], "searched architecture 'mlp', not 'av-superb'"),
        (["suite", "--split", "val"], "no completed trial with val probe scores"),
    ],
)
def test_command_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, args, message) -> None:
    url = f"sqlite:///{tmp_path}/suite.db"
    seed_store(url)
    assert main(["av-superb", *args, "--storage", url]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_command_without_a_store_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["av-superb", "suite", "--storage", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no results store at" in capsys.readouterr().err


SEARCH = """
[study]
name = "suite-search"
trials = 2
seed = 0
metric = "val_superb_score"

[architecture]
name = "av-superb"

[dataset]
name = "av-suite"
n_train = 96
n_val = 32
n_test = 32
duration = 0.25

[space]
modality = ["audio", "fused"]
objective = "contrastive"
fusion = "mid"
depth = 2
width = 32
probe_steps = 50
lr = 2e-3
epochs = 1
batch_size = 32

[strategy]
name = "grid"

[resources]
cpus_per_trial = 1
"""


@pytest.mark.slow  # `platform search` and `platform av-superb` subprocesses, two Ray trials
def test_search_then_the_suite_table(tmp_path: Path, ray_address: str) -> None:
    config = tmp_path / "suite.toml"
    config.write_text(textwrap.dedent(SEARCH))
    url = f"sqlite:///{tmp_path}/suite.db"
    result = run_platform("search", str(config), "--storage", url, "--address", ray_address)
    assert result.returncode == 0, result.stderr[-3000:]
    table = run_platform("av-superb", "suite-search", "--storage", url, "--json")
    assert table.returncode == 0, table.stderr[-3000:]
    rows = json.loads(table.stdout)
    # the audio upstream is probed on audio; the fused one on audio, visual and fused (which
    # trial number each got depends on which Tune started first)
    by_trial: dict[int, list[str]] = {}
    for row in rows:
        by_trial.setdefault(row["trial"], []).append(row["modality"])
    assert sorted(sorted(m) for m in by_trial.values()) == [
        ["audio"], ["audio", "fused", "visual"],
    ]  # fmt: skip
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4]


# -- CUDA ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_pretraining_step_on_cuda() -> None:
    splits = AVSuite().load(AVSuiteOptions(**TINY), 0)
    model = AVSuperb().build({"modality": "fused", "probe_steps": 5}, splits.spec)
    reports: list[dict[str, float]] = []
    train_av_superb(
        model, splits, {"epochs": 1, "batch_size": 8}, lambda s, m: reports.append(m), 0
    )
    assert next(model.parameters()).device.type == "cuda"
    assert torch.isfinite(torch.tensor(reports[-1]["train_loss"]))
    assert 0 <= reports[-1]["test_scene_acc_fused"] <= 1
