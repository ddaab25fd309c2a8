"""The log-mel front end, the audio classifier, the audio datasets and PGD robustness."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import pytest
import soundfile
import torch

from autoplat.core.config import load_config
from autoplat.core.errors import ConfigError, DataError
from autoplat.core.interfaces import DataSpec
from autoplat.core.registry import get_registry
from autoplat.core.training import TrialFailed
from autoplat.plugins.architectures.audio import Audio, AudioClassifier, mask_bands
from autoplat.plugins.audio.frontend import LogMel, hz_to_mel, mel_filterbank, mel_to_hz
from autoplat.plugins.datasets.audio import (
    EVENTS,
    AudioFolder,
    AudioFolderOptions,
    SoundEvents,
    SoundOptions,
    synthesize,
)
from autoplat.plugins.robustness import epsilon_sweep, parse_epsilons, pgd
from autoplat.testing import ArchitectureContract, DatasetContract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 8000
FAST = {"hop_length": 128, "n_mels": 24}  # 32 frames x 24 mel bins for 0.5 s at 8 kHz


@pytest.fixture(scope="module")
def events():
    return SoundEvents().load(SoundOptions(n_train=400, n_val=100, n_test=128), seed=0)


@pytest.fixture(scope="module")
def trained_cnn(events):
    """A CNN trained for 4 epochs, with its reports."""
    torch.manual_seed(0)
    model = Audio().build({"encoder": "cnn", "width": 16, **FAST}, events.spec)
    reports: list[dict[str, float]] = []
    hp = {"epochs": 4, "lr": 3e-3, "batch_size": 32}
    Audio().train(model, events, hp, lambda epoch, m: reports.append(m), seed=0)
    return model.eval(), reports


# -- front end ---------------------------------------------------------------------------------
def test_stft_power_matches_numpy() -> None:
    x = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    front = LogMel(RATE, n_fft=128, hop_length=32, n_mels=16)
    got = front.power(torch.from_numpy(x)).numpy()
    padded = np.pad(x, ((0, 0), (64, 64)), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(128) / 128)  # periodic Hann
    frames = np.stack([padded[:, i : i + 128] for i in range(0, padded.shape[1] - 127, 32)], 1)
    want = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (batch, frames, bins)
    assert got.shape == (2, 65, front.frames(1000)) == want.transpose(0, 2, 1).shape
    np.testing.assert_allclose(got, want.transpose(0, 2, 1), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_filterbank_shape_and_triangles(scale: str) -> None:
    assert hz_to_mel(1000.0, "htk") == pytest.approx(1000.0, abs=0.1)
    assert hz_to_mel(1000.0, "slaney") == pytest.approx(15.0)
    hz = np.array([0.0, 200.0, 1000.0, 3999.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz, scale), scale), hz, atol=1e-6)
    bank = mel_filterbank(RATE, 256, 32, scale=scale)
    assert bank.shape == (32, 129) and bank.dtype == np.float32 and (bank >= 0).all()
    assert (bank.sum(1) > 0).all(), "every filter covers at least one FFT bin"
    peaks = bank.argmax(1)
    assert (np.diff(peaks) >= 0).all(), "filter centres rise with the index"
    raw = mel_filterbank(RATE, 256, 32, scale=scale, norm=None)
    assert raw.max() <= 1 + 1e-6 and raw[:, 1:-1].sum(0)[5:-5].min() > 0.5  # triangles overlap
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(RATE, 256, 32, f_max=RATE)


def test_mel_filterbank_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    for htk in (False, True):
        want = librosa.filters.mel(sr=RATE, n_fft=256, n_mels=32, htk=htk)
        got = mel_filterbank(RATE, 256, 32, scale="htk" if htk else "slaney")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_logmel_is_batched_and_exports_to_onnx() -> None:
    import onnxruntime

    front = LogMel(RATE, n_fft=256, hop_length=64, n_mels=32).eval()
    x = torch.from_numpy(np.random.default_rng(1).uniform(-0.5, 0.5, (3, 2000)).astype("f4"))
    out = front(x)
    assert out.shape == (3, 32, front.frames(2000)) and torch.isfinite(out).all()
    assert torch.allclose(front(x[1:2]), out[1:2], atol=1e-5)
    # a 1 kHz tone puts its energy in the filter whose centre is nearest to 1 kHz
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(2000) / RATE)[None]
    centres = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(RATE / 2), 34)[1:-1])
    assert int(front(tone)[0].mean(1).argmax()) == int(np.abs(centres - 1000).argmin())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(front, (x,), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(["y"], {"x": x.numpy()})
    np.testing.assert_allclose(got, out.numpy(), atol=1e-3)


# -- datasets ------------------------------------------------------------------------------------
class TestSoundEvents(DatasetContract):
    @pytest.fixture
    def dataset(self):
        return SoundEvents()

    @pytest.fixture
    def options(self):
        return SoundOptions(n_train=24, n_val=8, n_test=8, duration=0.1)


def test_sound_events_are_valid_waveforms(events) -> None:
    x, y = events.train
    assert x.shape == (400, 4000) and x.dtype == torch.float32
    assert float(x.abs().max()) <= 1.0
    assert events.spec.label_names == EVENTS and set(y.tolist()) == set(range(len(EVENTS)))
    rng = np.random.default_rng(0)
    for event in EVENTS:
        clip = synthesize(event, 4000, RATE, rng)
        assert np.abs(clip).max() == pytest.approx(1.0) and (clip == 0).any()  # silence around
    # a chirp's dominant frequency rises over time
    clip = synthesize("chirp_up", 4000, RATE, np.random.default_rng(3))
    on = np.flatnonzero(clip)
    first, last = clip[on[0] : on[0] + 512], clip[on[-1] - 511 : on[-1] + 1]
    assert np.abs(np.fft.rfft(first)).argmax() < np.abs(np.fft.rfft(last)).argmax()


# -- architecture --------------------------------------------------------------------------------
class TestAudioArchitecture(ArchitectureContract):
    @pytest.fixture
    def architecture(self):
        return Audio()

    @pytest.fixture
    def data_spec(self):
        return DataSpec("classification", "audio", (2000,), 6)


def test_check_params() -> None:
    spec = DataSpec("classification", "audio", (4000,), 6)
    assert Audio().check_params({}, spec) is None
    assert "divisible" in Audio().check_params({"encoder": "ast", "width": 30, "heads": 4})
    assert "n_mels" in Audio().check_params({"encoder": "ast", "n_mels": 30, "patch_size": 8})
    assert "encoder" in Audio().check_params({"encoder": "rnn"})
    assert "unknown" in Audio().check_params({"fusion": "mid"})
    assert "samples" in Audio().check_params({}, DataSpec("classification", "image", (1, 8, 8)))


def test_cnn_learns_sound_events(trained_cnn, events) -> None:
    model, reports = trained_cnn
    assert isinstance(model, AudioClassifier) and isinstance(model.head, torch.nn.Linear)
    assert reports[-1]["train_loss"] < 0.8 * reports[0]["train_loss"]
    chance = 1 / len(EVENTS)
    assert reports[-1]["val_accuracy"] >= chance + 0.45, reports[-1]
    assert reports[-1]["test_accuracy"] >= chance + 0.45
    print(f"cnn: val {reports[-1]['val_accuracy']:.3f} test {reports[-1]['test_accuracy']:.3f}")


def test_ast_learns_sound_events(events) -> None:
    torch.manual_seed(0)
    params = {"encoder": "ast", "width": 32, "patch_size": 4, **FAST}
    model = Audio().build(params, events.spec)
    reports: list[dict[str, float]] = []
    hp = {"epochs": 4, "lr": 3e-3, "batch_size": 32}
    Audio().train(model, events, hp, lambda epoch, m: reports.append(m), seed=0)
    assert reports[-1]["train_loss"] < 0.85 * reports[0]["train_loss"]
    assert reports[-1]["val_accuracy"] >= 1 / len(EVENTS) + 0.2, reports[-1]
    print(f"ast: val {reports[-1]['val_accuracy']:.3f} test {reports[-1]['test_accuracy']:.3f}")


def test_ast_patches_overlap_as_asts() -> None:
    """patch_overlap cuts patches patch_size - overlap apart, so neighbours share bins;
    without it the grid is the old side-by-side one."""
    spec = DataSpec("classification", "audio", (4000,), 6)  # 32 frames x 24 mel bins
    params = {"encoder": "ast", "width": 16, "patch_size": 4, **FAST}
    model = Audio().build(params | {"patch_overlap": 2}, spec).eval()
    patches = model.encoder.patches
    assert patches.grid == (11, 15)  # (24 - 4) / 2 + 1 mel, (32 - 4) / 2 + 1 frames
    assert Audio().build(params, spec).encoder.patches.grid == (6, 8)  # 24 / 4, 32 / 4
    x = torch.randn(2, 1, 24, 32)
    tokens = patches.embed(x)  # (2, width, 11, 15)
    weight, bias = patches.embed.weight, patches.embed.bias
    for i, j in ((0, 1), (3, 7), (10, 14)):
        window = x[:, :, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4]
        expected = (window[:, None] * weight[None]).sum(dim=(2, 3, 4)) + bias
        torch.testing.assert_close(tokens[:, :, i, j], expected, rtol=1e-5, atol=1e-5)
    assert "below patch_size" in Audio().check_params(params | {"patch_overlap": 4})
    assert "do not tile n_mels 24" in Audio().check_params(
        params | {"patch_size": 8, "patch_overlap": 2}  # (24 - 8) % 6 != 0
    )


def test_ast_pools_a_cls_token_or_the_mean() -> None:
    spec = DataSpec("classification", "audio", (4000,), 6)
    torch.manual_seed(0)
    params = {"encoder": "ast", "width": 16, "patch_size": 4, **FAST}
    mean = Audio().build(params | {"pooling": "mean"}, spec).eval()
    assert not hasattr(mean.encoder, "cls_token")
    x = torch.randn(3, 4000) * 0.1
    with torch.no_grad():
        spectrogram = mean.spectrogram(x)
        enc = mean.encoder
        tokens = enc.norm(enc.blocks(enc.patches(spectrogram)))
        torch.testing.assert_close(mean.features(x), tokens.mean(dim=1))
    cls = Audio().build(params, spec)
    assert cls.encoder.cls_token.shape == (1, 1, 16)
    assert "pooling must be" in Audio().check_params(params | {"pooling": "max"})


def test_specaugment_masks_one_band_per_example_in_training_only() -> None:
    torch.manual_seed(0)
    x = torch.ones(200, 24, 32)
    for dim, size in ((1, 24), (2, 32)):
        masked = mask_bands(x, 6, dim)
        zero = (masked == 0).all(dim=3 - dim)  # (batch, size): the masked bins or frames
        assert (masked == 0).sum(dim=(1, 2)).equal(zero.sum(1) * x.shape[3 - dim])
        widths = zero.sum(1)
        assert widths.max() == 6 and widths.min() == 0 and len(set(widths.tolist())) == 7
        for row, width in zip(zero, widths, strict=True):  # one contiguous band
            where = row.nonzero().flatten()
            assert len(where) == 0 or where[-1] - where[0] + 1 == width
        assert zero[:, 0].any() and zero[:, size - 1].any()  # bands reach both edges
    assert torch.equal(mask_bands(x, 0, 1), x)
    spec = DataSpec("classification", "audio", (4000,), 6)
    model = Audio().build({"freq_mask": 4, "time_mask": 4, **FAST}, spec)
    plain = Audio().build(FAST, spec)
    waves = torch.randn(8, 4000) * 0.1
    model.eval(), plain.eval()
    assert torch.equal(model.spectrogram(waves), plain.spectrogram(waves))  # eval: no masks
    model.train()
    assert (model.spectrogram(waves) == 0).sum() > 0


@pytest.mark.slow
def test_ast_with_its_recipe_comes_close_to_the_cnn(trained_cnn, events) -> None:
    """The AST, 4x cheaper per epoch than the CNN, given about the CNN's CPU time: width
    32, patches of 4, warmup, 20 epochs (benchmarks/ast_vs_cnn.py measures it at size)."""
    torch.manual_seed(0)
    params = {"encoder": "ast", "width": 32, "patch_size": 4, **FAST}
    model = Audio().build(params, events.spec)
    reports: list[dict[str, float]] = []
    hp = {"epochs": 20, "lr": 3e-3, "batch_size": 32, "warmup_epochs": 1}
    Audio().train(model, events, hp, lambda epoch, m: reports.append(m), seed=0)
    chance, cnn = 1 / len(EVENTS), trained_cnn[1][-1]["test_accuracy"]
    print(f"ast: test {reports[-1]['test_accuracy']:.3f}, cnn {cnn:.3f}")
    assert reports[-1]["test_accuracy"] >= 4 * chance, reports[-1]  # 0.67
    assert reports[-1]["test_accuracy"] >= cnn - 0.1


def test_trainer_reports_robust_metrics(events) -> None:
    torch.manual_seed(0)
    model = Audio().build({"encoder": "cnn", "width": 8, "depth": 1, **FAST}, events.spec)
    small = type(events)(
        events.train, events.val, (events.test[0][:16], events.test[1][:16]), events.spec
    )
    reports: list[dict[str, float]] = []
    hp = {
        "epochs": 2,
        "batch_size": 64,
        "robust_epsilons": "0.01, 0",
        "robust_steps": 2,
        "robust_samples": 16,
    }
    final = Audio().train(model, small, hp, lambda epoch, m: reports.append(m), seed=0)
    assert "val_robust_accuracy" in reports[0] and "test_robust_accuracy" not in reports[0]
    assert final["test_robust_eps_0"] == 0.0 and final["test_robust_eps_1"] == 0.01
    assert final["test_robust_acc_eps_1"] == final["test_robust_accuracy"]
    assert final["test_robust_acc_eps_0"] == pytest.approx(
        (model(small.test[0]).argmax(1) == small.test[1]).float().mean().item()
    )
    with pytest.raises(TrialFailed, match="robust_epsilons"):
        Audio().train(model, small, {**hp, "robust_epsilons": "0.1, big"}, lambda *a: None, 0)
    with pytest.raises(TrialFailed, match="robust_norm"):
        Audio().train(model, small, {**hp, "robust_norm": "l1"}, lambda *a: None, 0)


# -- robustness ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.02), ("l2", 0.5)])
def test_pgd_stays_within_budget_and_range(trained_cnn, events, norm, epsilon) -> None:
    model, _ = trained_cnn
    x, y = events.test[0][:32], events.test[1][:32]
    for random_start in (True, False):
        (adv,) = pgd(model, [x], y, epsilon, norm, steps=4, random_start=random_start)
        delta = (adv - x).flatten(1)
        norms = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (norms <= epsilon * (1 + 1e-5) + 1e-7).all(), norms.max()
        assert norms.max() > 0.5 * epsilon  # it did move
        assert float(adv.min()) >= -1 and float(adv.max()) <= 1


@pytest.mark.parametrize(
    ("norm", "epsilons"), [("linf", [0.0, 0.003, 0.01, 0.03]), ("l2", [0.0, 0.1, 0.4, 1.5])]
)
def test_accuracy_falls_as_epsilon_grows(trained_cnn, events, norm, epsilons) -> None:
    model, _ = trained_cnn
    x, y = events.test[0][:64], events.test[1][:64]
    curve = epsilon_sweep(model, x, y, epsilons, norm=norm, modality="audio", steps=5)
    accuracies = [accuracy for _, accuracy in curve]
    assert [eps for eps, _ in curve] == epsilons
    assert all(b <= a + 0.05 for a, b in zip(accuracies, accuracies[1:], strict=False)), curve
    assert accuracies[-1] <= accuracies[0] - 0.25, curve
    print(f"{norm}: {curve}")


def test_attack_arguments_are_checked(trained_cnn, events) -> None:
    model, _ = trained_cnn
    x, y = events.test[0][:4], events.test[1][:4]
    with pytest.raises(ValueError, match="image"):
        pgd(model, [x], y, 0.1, attack="image")
    with pytest.raises(ValueError, match="norm"):
        pgd(model, [x], y, 0.1, norm="l1")
    assert parse_epsilons("0.02, 0 ,0.01") == [0.0, 0.01, 0.02] == parse_epsilons([0.01, 0.02, 0])
    assert parse_epsilons("") == []
    with pytest.raises(ValueError, match=">= 0"):
        parse_epsilons("-1")


# -- audio files ---------------------------------------------------------------------------------
def write_folder(root, rows, *, corrupt: bool = False) -> None:
    """Write tone clips: rows of (name, label, rate, channels, seconds, frequency)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["path,label"]
    for name, label, rate, channels, seconds, freq in rows:
        t = np.arange(int(rate * seconds)) / rate
        wave = 0.5 * np.sin(2 * np.pi * freq * t)
        data = np.stack([wave, np.zeros_like(wave)], 1) if channels == 2 else wave
        soundfile.write(root / name, data, rate)
        lines.append(f"{name},{label}")
    if corrupt:
        (root / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
        lines.append("broken.wav,low")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


FILES = [
    (f"{label}{i}.{ext}", label, rate, channels, seconds, freq)
    for label, freq in (("low", 300.0), ("high", 1500.0))
    for i, (ext, rate, channels, seconds) in enumerate(
        [
            ("wav", 8000, 1, 0.3),
            ("flac", 16000, 2, 0.6),
            ("wav", 11025, 1, 0.5),
            ("flac", 22050, 2, 0.4),
        ]
    )
]
FOLDER_OPTIONS = {"sample_rate": 8000, "duration": 0.5, "val_fraction": 0.25, "test_fraction": 0.25}


class TestAudioFolder(DatasetContract):
    @pytest.fixture
    def dataset(self):
        return AudioFolder()

    @pytest.fixture
    def options(self, tmp_path_factory):
        root = tmp_path_factory.mktemp("clips")
        write_folder(root, FILES)
        return AudioFolderOptions(path=root, **FOLDER_OPTIONS)


def test_audio_folder_resamples_mixes_and_pads(tmp_path) -> None:
    write_folder(tmp_path, FILES)
    splits = AudioFolder().load(AudioFolderOptions(path=tmp_path, **FOLDER_OPTIONS), seed=0)
    assert splits.spec.label_names == ("high", "low") and splits.spec.input_shape == (4000,)
    x = torch.cat([splits.train[0], splits.val[0], splits.test[0]]).numpy()
    y = torch.cat([splits.train[1], splits.val[1], splits.test[1]]).numpy()
    assert len(x) == 8
    for wave, label in zip(x, y, strict=True):
        voiced = wave[: int(0.3 * 8000)]  # every file lasts at least 0.3 s
        freq = np.abs(np.fft.rfft(voiced)).argmax() * 8000 / len(voiced)
        assert freq == pytest.approx(1500.0 if label == 0 else 300.0, abs=15)
        peak = np.abs(voiced).max()
        assert peak == pytest.approx(0.5, abs=0.03) or peak == pytest.approx(0.25, abs=0.03)
    short = [w for w in x if np.abs(w[int(0.31 * 8000) :]).max() == 0]
    assert len(short) == 2, "the two 0.3 s files are zero-padded to 0.5 s"


def test_audio_folder_bad_files(tmp_path, caplog) -> None:
    write_folder(tmp_path, FILES, corrupt=True)
    options = AudioFolderOptions(path=tmp_path, **FOLDER_OPTIONS)
    with pytest.raises(DataError, match=r"labels\.csv:10: cannot read audio file .*broken\.wav"):
        AudioFolder().load(options, 0)
    with caplog.at_level(logging.WARNING):
        splits = AudioFolder().load(options.model_copy(update={"skip_bad": True}), 0)
    assert "skipped 1 of 9 rows" in caplog.text and "broken.wav" in caplog.text
    assert sum(len(part[1]) for part in (splits.train, splits.val, splits.test)) == 8

    (tmp_path / "labels.csv").write_text("file,class\nlow0.wav,low\n")
    with pytest.raises(DataError, match="lacks column.*path, label.*it has file, class"):
        AudioFolder().load(options, 0)
    (tmp_path / "labels.csv").write_text("path,label\nmissing.wav,low\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: audio file .*missing\.wav does not"):
        AudioFolder().load(options, 0)
    (tmp_path / "labels.csv").write_text("path,label\nlow0.wav,low\nhigh0.wav,high\n")
    with pytest.raises(DataError, match=r"too few files in: high \(1\), low \(1\)"):
        AudioFolder().load(options, 0)
    with pytest.raises(DataError, match="nowhere does not exist"):
        AudioFolder().load(AudioFolderOptions(path=tmp_path / "nowhere"), 0)


# -- config --------------------------------------------------------------------------------------
AUDIO_CONFIG = """
[study]
name = "audio-config"
metric = "val_robust_accuracy"

[architecture]
name = "{arch}"

[dataset]
name = "{dataset}"
{data}

[space]
robust_epsilons = "0, 0.01"
"""


@pytest.mark.parametrize(
    ("arch", "dataset", "data", "ok"),
    [
        ("audio", "sound-events", "", True),
        ("audio", "audio-visual-events", 'modality = "audio"', True),
        ("audio", "audio-visual-events", "", False),
        ("vit", "sound-events", "", False),
    ],
)
def test_config_matches_modalities(write_config, arch, dataset, data, ok) -> None:
    path = write_config(AUDIO_CONFIG.format(arch=arch, dataset=dataset, data=data))
    if ok:
        assert load_config(path, get_registry()).direction == "maximize"
    else:
        with pytest.raises(ConfigError, match="cannot feed architecture"):
            load_config(path, get_registry())
