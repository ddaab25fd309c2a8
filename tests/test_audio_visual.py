"""Audio-visual events, early/mid/late fusion, frozen probes, multimodal PGD and the CLI."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch

from autoplat.core.config import load_config
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import DataSpec
from autoplat.core.registry import get_registry
from autoplat.plugins.architectures.audio_visual import (
    AudioVisual,
    AudioVisualModel,
    fusion_layer,
)
from autoplat.plugins.datasets.audio import (
    AV_CLASSES,
    AV_SHAPES,
    AV_SOUNDS,
    AudioVisualEvents,
    AudioVisualOptions,
)
from autoplat.plugins.robustness import epsilon_sweep, pgd
from autoplat.testing import DatasetContract, run_platform

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"width": 32, "depth": 2, "heads": 2, "hop_length": 128, "audio_patch": 8}
HP = {"epochs": 8, "lr": 5e-3, "batch_size": 32, "warmup_epochs": 1, "eval_every": 8}


@pytest.fixture(scope="module")
def pairs():
    options = AudioVisualOptions(n_train=400, n_val=150, n_test=100)
    return AudioVisualEvents().load(options, seed=0)


@pytest.fixture(scope="module")
def trained_mid(pairs):
    """Mid fusion trained for 8 epochs, with its reports."""
    torch.manual_seed(0)
    model = AudioVisual().build({**SMALL, "fusion": "mid"}, pairs.spec)
    reports: list[dict[str, float]] = []
    AudioVisual().train(model, pairs, HP, lambda epoch, m: reports.append(m), seed=0)
    return model.eval(), reports


# -- dataset -------------------------------------------------------------------------------------
def test_pairs_layout_and_factorised_classes(pairs) -> None:
    spec = pairs.spec
    assert (spec.task, spec.modality) == ("classification", "audio-image")
    assert spec.input_shape == (4000, 3, 16, 16) and spec.label_names == AV_CLASSES
    audio, images, labels = pairs.train
    assert audio.shape == (400, 4000) and images.shape == (400, 3, 16, 16)
    assert float(audio.abs().max()) <= 1 and 0 <= float(images.min()) <= float(images.max()) <= 1
    assert len(AV_CLASSES) == len(AV_SOUNDS) * len(AV_SHAPES)
    # class k is sound k // 2 with shape k % 2
    for k, name in enumerate(AV_CLASSES):
        sound, shape = name.split("-")
        assert AV_SOUNDS.index(sound) == k // len(AV_SHAPES)
        assert AV_SHAPES.index(shape) == k % len(AV_SHAPES)


@pytest.mark.parametrize("modality", ["audio", "image"])
def test_one_modality_is_ordinary_classification(modality: str) -> None:
    options = AudioVisualOptions(n_train=8, n_val=4, n_test=4, modality=modality)
    assert AudioVisualEvents().kind(options) == (modality, ("classification",))
    splits = AudioVisualEvents().load(options, 0)
    x, y = splits.train
    assert tuple(x.shape[1:]) == splits.spec.input_shape and splits.spec.modality == modality


def test_noisy_pairs_blank_one_modality() -> None:
    options = AudioVisualOptions(n_train=200, n_val=4, n_test=4, noisy_pairs=0.5)
    audio, images, _ = AudioVisualEvents().load(options, 0).train
    blank_image = images.amax(dim=(1, 2, 3)) < 0.5  # noise only, no shape colour
    blank_audio = audio.abs().amax(dim=1) < 0.12  # background noise only
    assert 0.15 < blank_image.float().mean() < 0.35 and 0.15 < blank_audio.float().mean() < 0.35
    assert not (blank_image & blank_audio).any()


class TestAudioOnlyEvents(DatasetContract):
    @pytest.fixture
    def dataset(self):
        return AudioVisualEvents()

    @pytest.fixture
    def options(self):
        return AudioVisualOptions(n_train=16, n_val=6, n_test=6, duration=0.1, modality="image")


# -- model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["early", "mid", "late"])
def test_fusion_decides_where_the_modalities_meet(pairs, fusion: str) -> None:
    torch.manual_seed(0)
    model = AudioVisual().build({**SMALL, "depth": 3, "fusion": fusion}, pairs.spec).eval()
    assert isinstance(model, AudioVisualModel)
    assert len(model.joint_blocks) == 3 - fusion_layer(fusion, 3)
    audio, images, _ = (t[:4] for t in pairs.val)
    with torch.no_grad():
        both = model.embed(audio, images)
        other = model.embed(audio, images.flip(0))  # same sounds, other pictures
        alone = model.embed(audio=audio)
        assert both.shape == (4, 64) and alone.shape == (4, 32)
        assert model.embed(image=images).shape == (4, 32)
        assert model(audio, images).shape == (4, len(AV_CLASSES))
    audio_part_moved = not torch.allclose(both[:, :32], other[:, :32], atol=1e-5)
    assert audio_part_moved == (fusion != "late")  # late: the sound ignores the picture
    if fusion == "late":
        assert torch.allclose(both[:, :32], alone, atol=1e-5)


def test_check_params() -> None:
    arch = AudioVisual()
    spec = DataSpec("classification", "audio-image", (4000, 3, 16, 16), 6)
    assert arch.check_params({}, spec) is None
    assert "fusion" in arch.check_params({"fusion": "middle"})
    assert "depth >= 2" in arch.check_params({"fusion": "mid", "depth": 1})
    assert arch.check_params({"fusion": "late", "depth": 1}) is None
    assert "image_patch" in arch.check_params({"image_patch": 5}, spec)
    assert "audio-image" in arch.check_params({}, DataSpec("classification", "audio", (4000,)))
    with pytest.raises(ValueError, match="audio_patch"):
        arch.build({"audio_patch": 5}, spec)


def test_exports_to_onnx_with_two_inputs(pairs) -> None:
    import onnxruntime

    torch.manual_seed(0)
    model = AudioVisual().build({**SMALL, "fusion": "mid"}, pairs.spec).eval()
    audio, images = pairs.val[0][:3], pairs.val[1][:3]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (audio, images),
            buffer,
            dynamo=False,
            input_names=["audio", "image"],
            output_names=["logits"],
        )
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"audio": audio.numpy(), "image": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(audio, images).numpy(), atol=1e-4)


# -- training and probes ------------------------------------------------------------------------
@pytest.mark.slow  # trains for seconds
def test_mid_fusion_learns_and_fused_beats_each_modality(trained_mid) -> None:
    _, reports = trained_mid
    final = reports[-1]
    assert final["train_loss"] < 0.6 * reports[0]["train_loss"]
    chance = 1 / len(AV_CLASSES)
    assert final["val_accuracy"] >= chance + 0.3 and final["test_accuracy"] >= chance + 0.3
    audio, image, fused = (
        final[f"val_{use}_probe_accuracy"] for use in ("audio", "image", "fused")
    )
    # the sound alone leaves two classes open (<= 50%), the picture three (<= 33%)
    assert fused >= max(audio, image) + 0.1, final
    assert audio <= 0.5 + 0.1 and image <= 1 / 3 + 0.1
    assert {"test_audio_probe_accuracy", "test_image_probe_accuracy"} <= set(final)
    assert "test_fused_probe_accuracy" not in reports[0]
    assert all("val_fused_probe_accuracy" in r for r in reports)  # carried between evaluations
    print(
        f"mid: val {final['val_accuracy']:.3f} test {final['test_accuracy']:.3f}; probes audio "
        f"{audio:.3f} image {image:.3f} fused {fused:.3f}"
    )


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_early_and_late_fusion_train(pairs, fusion: str) -> None:
    torch.manual_seed(0)
    model = AudioVisual().build({**SMALL, "fusion": fusion}, pairs.spec)
    reports: list[dict[str, float]] = []
    hp = {**HP, "epochs": 3, "eval_every": 3}
    AudioVisual().train(model, pairs, hp, lambda epoch, m: reports.append(m), seed=0)
    assert reports[-1]["train_loss"] < 0.85 * reports[0]["train_loss"]
    assert reports[-1]["val_accuracy"] >= 1 / len(AV_CLASSES) + 0.1, reports[-1]


# -- robustness ----------------------------------------------------------------------------------
@pytest.mark.slow  # trains for seconds
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["audio", "image", "both"])
def test_pgd_budget_per_modality(trained_mid, pairs, norm: str, attack: str) -> None:
    model, _ = trained_mid
    audio, images, labels = (t[:16] for t in pairs.test)
    epsilon = 0.05 if norm == "linf" else 1.0
    adv_audio, adv_images = pgd(
        model, [audio, images], labels, epsilon, norm, attack, ("audio", "image"), steps=3
    )
    for name, x, adv, lo, hi in (
        ("audio", audio, adv_audio, -1, 1),
        ("image", images, adv_images, 0, 1),
    ):
        delta = (adv - x).flatten(1)
        if attack not in (name, "both"):
            assert torch.equal(adv, x), f"{name} must stay untouched when attacking {attack}"
            continue
        norms = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (norms <= epsilon * (1 + 1e-5) + 1e-7).all() and norms.max() > 0
        assert float(adv.min()) >= lo and float(adv.max()) <= hi


@pytest.mark.slow  # trains for seconds
def test_attacking_both_modalities_sweeps_down(trained_mid, pairs) -> None:
    model, _ = trained_mid
    audio, images, labels = (t[:64] for t in pairs.test)
    curve = epsilon_sweep(
        model, (audio, images), labels, [0.0, 0.01, 0.03, 0.1], "linf", "both", steps=4
    )
    accuracies = [accuracy for _, accuracy in curve]
    assert all(b <= a + 0.05 for a, b in zip(accuracies, accuracies[1:], strict=False)), curve
    assert accuracies[-1] <= accuracies[0] - 0.3, curve
    print(f"audio-visual linf both: {curve}")


# -- config and CLI ------------------------------------------------------------------------------
AV_CONFIG = """
[study]
name = "av-search"
trials = 2
seed = 0
metric = "{metric}"

[architecture]
name = "audio-visual"

[dataset]
name = "{dataset}"
n_train = 64
n_val = 24
n_test = 24
duration = 0.25

[space]
fusion = ["early", "late"]
depth = [1]
width = [16]
heads = [2]
audio_patch = [8]
hop_length = 128
batch_size = 32
epochs = 2
robust_epsilons = "0, 0.05"
robust_steps = 2
robust_samples = 16

[resources]
cpus_per_trial = 1
"""


def test_config_refuses_audio_only_data(write_config) -> None:
    path = write_config(AV_CONFIG.format(metric="val_accuracy", dataset="sound-events"))
    with pytest.raises(ConfigError, match="cannot feed architecture 'audio-visual'"):
        load_config(path, get_registry())
    path = write_config(AV_CONFIG.format(metric="val_fused_probe", dataset="audio-visual-events"))
    with pytest.raises(ConfigError, match="val_fused_probe_accuracy"):
        load_config(path, get_registry())
    robust = AV_CONFIG.format(metric="val_robust_accuracy", dataset="audio-visual-events")
    for epsilons in ('robust_epsilons = ""', 'robust_epsilons = ["0, 0.05", ""]', ""):
        path = write_config(robust.replace('robust_epsilons = "0, 0.05"', epsilons))
        with pytest.raises(ConfigError, match="reports 'val_robust_accuracy' only when"):
            load_config(path, get_registry())


@pytest.mark.slow  # a `platform search` subprocess and two Ray trials
def test_search_stores_robust_metrics(write_config, tmp_path, ray_address) -> None:
    text = AV_CONFIG.format(metric="val_robust_accuracy", dataset="audio-visual-events")
    path = write_config(text)
    url = f"sqlite:///{tmp_path}/av.db"
    result = run_platform("search", str(path), "--storage", url, "--address", ray_address)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(run_platform("show", "av-search", "--storage", url, "--json").stdout)
    trials = shown["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 2
    assert {t["params"]["fusion"] for t in trials} <= {"early", "late"}
    for trial in trials:
        metrics = trial["metrics"]
        assert trial["value"] == metrics["val_robust_accuracy"]
        assert metrics["test_robust_eps_1"] == 0.05
        assert metrics["test_robust_acc_eps_1"] == metrics["test_robust_accuracy"]
        assert 0 <= metrics["test_robust_acc_eps_1"] <= metrics["test_robust_acc_eps_0"] <= 1
        assert metrics["test_robust_acc_eps_0"] > 1 / 6  # clean accuracy above chance (6 classes)
        assert {"test_fused_probe_accuracy", "val_audio_probe_accuracy"} <= set(metrics)
