"""Audio-visual scene transfer: the av-scenes generator, the av-folder loader and its
errors, the conditional latent diffusion architecture (contract, training, metrics,
artifacts, Griffin-Lim) and bad params."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoplat.core.config import load_config
from autoplat.core.errors import ConfigError, DataError
from autoplat.core.interfaces import Architecture, Dataset, DataSpec, Options, Splits
from autoplat.core.registry import get_registry
from autoplat.core.space import SearchSpace
from autoplat.core.training import TrialFailed
from autoplat.plugins.architectures.scene_transfer import (
    SceneTransfer,
    griffin_lim,
    mel_to_magnitude,
    scene_distance,
    scene_statistics,
    train_scene_transfer,
    waveforms,
    write_wav,
)
from autoplat.plugins.audio.frontend import LogMel, mel_filterbank
from autoplat.plugins.datasets.av_scenes import SCENES, AVFolder, AVScenes, spectral_gate
from autoplat.testing import ArchitectureContract, DatasetContract, run_platform

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"n_train": 9, "n_val": 3, "n_test": 3, "clips_per_video": 3}
TINY = {"ae_width": 8, "unet_width": 16, "cond_width": 8}
TRAIN = {
    "epochs": 4,
    "ae_epochs": 4,
    "lr": 3e-3,
    "batch_size": 4,
    "eval_clips": 9,
    "sample_steps": 5,
    "artifact_clips": 1,
}
GPU_SKIP = "needs a CUDA GPU"


@pytest.fixture(scope="module")
def scenes() -> Splits:
    return AVScenes().load(AVScenes.Options(**SMALL), seed=0)


def logmel(waves: torch.Tensor) -> torch.Tensor:
    return LogMel(8000, 256, 64, 32, floor=1e-5)(waves)[..., :64]


# -- the generator -------------------------------------------------------------------------
def test_generator_is_deterministic_and_shaped(scenes: Splits) -> None:
    again = AVScenes().load(AVScenes.Options(**SMALL), seed=0)
    other = AVScenes().load(AVScenes.Options(**SMALL), seed=1)
    for a, b, _c in zip(scenes.train, again.train, other.train, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(scenes.train[0], other.train[0])
    clean, wet, cond, frames, scene, video = scenes.train
    assert clean.shape == wet.shape == cond.shape == (27, 4096)
    assert frames.shape == (27, 3, 16, 16) and frames.min() >= 0 and frames.max() <= 1
    assert scenes.spec.input_shape == (4096, 3, 16, 16) and scenes.spec.sample_rate == 8000
    assert scenes.spec.task == "scene-transfer" and scenes.spec.modality == "audio-image"
    # the condition is another clip of the same video: in the scene, not the target
    assert all((cond[i] != wet[i]).any() for i in range(len(wet)))
    assert torch.equal(cond[0], wet[1]) and video[0] == video[1]
    videos = [set(split[5].tolist()) for split in (scenes.train, scenes.val, scenes.test)]
    assert not videos[0] & videos[1] and not videos[0] & videos[2] and not videos[1] & videos[2]


def test_scenes_differ_in_the_designed_statistics() -> None:
    splits = AVScenes().load(AVScenes.Options(n_train=24, n_val=1, n_test=1), seed=0)
    clean, wet, cond, frames, scene, _ = splits.train
    noise, decay = scene_statistics(logmel(wet))
    by_scene = {SCENES[k].name: float(decay[scene == k].mean()) for k in scene.unique().tolist()}
    assert by_scene["booth"] > 1.5 * max(by_scene["hall"], by_scene["tunnel"])  # dry vs reverberant
    _, clean_decay = scene_statistics(logmel(clean))
    assert clean_decay.mean() > decay.mean()  # reverberation slows the falls after offsets
    # ambience: the quiet frames of a scene are far above the clean clips' silence
    assert float(noise.mean()) > float(scene_statistics(logmel(clean))[0].mean()) + 2
    # a clip is closer to another clip of its video than to a clip of another scene
    same = sum(scene_distance(logmel(wet), logmel(cond))).mean()
    shift = torch.roll(torch.arange(len(scene)), 4)  # the next video
    other = scene[shift] != scene
    far = sum(scene_distance(logmel(wet)[other], logmel(cond)[shift][other])).mean()
    assert same < 0.6 * far
    # the look: a frame's mean colour tells its scene (the nearest scene's mean colour)
    colour = frames.mean((2, 3))
    centroids = torch.stack([colour[scene == k].mean(0) for k in range(len(SCENES))])
    assert (torch.cdist(colour, centroids).argmin(1) == scene).float().mean() > 0.9


class TestAVScenesContract(DatasetContract):
    """The dataset contract, generalized to a tuple of tensors (as tests/test_e2e_contracts)."""

    @pytest.fixture
    def dataset(self) -> Dataset:
        return get_registry().get("datasets", "av-scenes")

    @pytest.fixture
    def options(self, dataset: Dataset) -> Options:
        return dataset.Options(**SMALL)

    def test_spec_matches_tensors(self, dataset: Dataset, options: Options, splits: Splits) -> None:  # type: ignore[override]
        spec = splits.spec
        assert (spec.modality, (spec.task,)) == dataset.kind(options)
        for name in ("train", "val", "test"):
            clean, wet, cond, frames, scene, video = getattr(splits, name)
            assert len({len(t) for t in (clean, wet, cond, frames, scene, video)}) == 1
            assert (clean.shape[1], *frames.shape[1:]) == spec.input_shape
            for x in (clean, wet, cond, frames):
                assert x.is_floating_point() and torch.isfinite(x).all()
            assert scene.dtype == video.dtype == torch.int64 and scene.max() < spec.num_classes


# -- av-folder ---------------------------------------------------------------------------
def write_folder(root: Path, videos: int = 3, clips: int = 2, rate: int = 8000, clean=False):
    """A folder of real-looking clips: WAVs, PNG frames and clips.csv; returns the rows."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for v in range(videos):
        colour = rng.integers(0, 255, 3)
        for c in range(clips):
            name = f"v{v}c{c}"
            t = np.arange(int(0.3 * rate)) / rate
            sound = 0.3 * np.sin(2 * np.pi * (200 + 50 * c + 10 * v) * t)
            write_wav(torch.from_numpy(sound), rate, root / f"{name}.wav")
            pixels = np.broadcast_to(colour, (8, 8, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{name}.png")
            row = {
                "clip": name,
                "video": f"video{v}",
                "audio": f"{name}.wav",
                "frame": f"{name}.png",
            }
            if clean:
                write_wav(torch.from_numpy(sound / 2), rate, root / f"{name}_clean.wav")
                row["clean"] = f"{name}_clean.wav"
            rows.append(row)
    write_csv(root / "clips.csv", rows)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def folder_options(path: Path, **extra) -> Options:
    return AVFolder.Options(path=path, duration=0.256, image_size=8, **extra)


def test_av_folder_reads_clips_and_pairs_them_within_videos(tmp_path: Path) -> None:
    write_folder(tmp_path, videos=4, clips=2, clean=True)
    splits = AVFolder().load(folder_options(tmp_path), seed=0)
    assert splits.spec.input_shape == (2048, 3, 8, 8) and splits.spec.num_classes == 4
    seen = set()
    for part in (splits.train, splits.val, splits.test):
        clean, wet, cond, frames, scene, video = part
        assert len(clean) % 2 == 0 and len(clean) > 0  # whole videos
        assert torch.allclose(clean, wet / 2, atol=1e-4)  # the clean column's files
        for i in range(len(wet)):  # each clip's condition: the other clip of its video
            j = i + 1 if i % 2 == 0 else i - 1
            assert torch.equal(cond[i], wet[j]) and video[i] == video[j]
        assert torch.equal(scene, video)
        assert not seen & set(video.tolist())
        seen |= set(video.tolist())
    assert seen == {0, 1, 2, 3}
    # without a clean column the input is the spectral-gated recording
    write_folder(tmp_path / "gated", videos=3, clips=2)
    gated = AVFolder().load(folder_options(tmp_path / "gated" / "clips.csv"), seed=0)
    expected = torch.stack([torch.from_numpy(spectral_gate(w.numpy())) for w in gated.train[1]])
    assert torch.allclose(gated.train[0], expected, atol=1e-5)
    assert not torch.equal(gated.train[0], gated.train[1])


def test_spectral_gate_removes_stationary_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(4096) / 8000
    tone = np.where((t > 0.2) & (t < 0.3), np.sin(2 * np.pi * 440 * t), 0.0)
    noisy = (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    gated = spectral_gate(noisy)
    quiet = t < 0.15
    assert np.std(gated[quiet]) < 0.5 * np.std(noisy[quiet])
    loud = (t > 0.22) & (t < 0.28)
    assert np.std(gated[loud]) > 0.8 * np.std(tone[loud])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_csv", "holds no clips.csv; add one with columns clip,video,audio,frame"),
        ("no_column", r"the header lacks column\(s\) frame; it has clip, video, audio"),
        ("no_audio", "audio file .*v1c0.wav does not exist; fix the path in the row"),
        ("no_frame", "frame image .*v2c1.png does not exist"),
        ("single", r"video\(s\) video9 \(line 8\) have a single clip"),
        ("two_videos", "2 video\\(s\\); the train/val/test split is by video and needs at least 3"),
        ("empty", "clips.csv:3: empty audio; fill in the row"),
        (
            "rate",
            r"v0c0.wav is at 16000 Hz, but \[dataset\] sample_rate is 8000; "
            "set sample_rate = 16000, or resample = true",
        ),
        ("missing", "does not exist; set \\[dataset\\] path to a clips CSV or its folder"),
    ],
)
def test_av_folder_refuses_bad_input_clearly(tmp_path: Path, damage: str, message: str) -> None:
    rows = write_folder(tmp_path, videos=2 if damage == "two_videos" else 3)
    path = tmp_path
    if damage == "no_csv":
        (tmp_path / "clips.csv").unlink()
    elif damage == "no_column":
        write_csv(
            tmp_path / "clips.csv", [{k: v for k, v in r.items() if k != "frame"} for r in rows]
        )
    elif damage == "no_audio":
        (tmp_path / "v1c0.wav").unlink()
    elif damage == "no_frame":
        (tmp_path / "v2c1.png").unlink()
    elif damage == "single":
        write_csv(tmp_path / "clips.csv", [*rows, rows[0] | {"video": "video9"}])
    elif damage == "empty":
        write_csv(tmp_path / "clips.csv", [rows[0], rows[1] | {"audio": ""}, *rows[2:]])
    elif damage == "rate":
        write_wav(torch.zeros(4000), 16000, tmp_path / "v0c0.wav")
    elif damage == "missing":
        path = tmp_path / "nowhere"
    with pytest.raises(DataError, match=message):
        AVFolder().load(folder_options(path), seed=0)
    if damage == "rate":  # resample = true reads it
        AVFolder().load(folder_options(path, resample=True), seed=0)


@pytest.mark.slow
def test_av_folder_error_exits_2_with_one_line(tmp_path: Path, write_config) -> None:
    rows = write_folder(tmp_path / "clips")
    write_csv(tmp_path / "clips" / "clips.csv", [*rows, rows[0] | {"video": "lonely"}])
    config = write_config(
        EXAMPLE.read_text().replace(
            'name = "av-scenes"',
            f'name = "av-folder"\npath = "{tmp_path / "clips"}"\nduration = 0.256',
        )
    )
    result = run_platform("search", str(config), "--storage", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert "video(s) lonely (line 8) have a single clip" in lines[-1]
    assert "Traceback" not in result.stderr


# -- the architecture ------------------------------------------------------------------------
EXAMPLE = Path(__file__).parent.parent / "examples" / "scene_transfer.toml"


class TestSceneTransferContract(ArchitectureContract):
    """The contract over the parts `platform export` writes (condition encoder, denoiser,
    encoder, decoder), on real av-scenes splits, for the corners of a small space."""

    @pytest.fixture
    def architecture(self) -> Architecture:
        return get_registry().get("architectures", "scene-transfer")

    @pytest.fixture
    def splits(self, scenes: Splits) -> Splits:
        return scenes

    @pytest.fixture
    def data_spec(self, splits: Splits) -> DataSpec:
        return splits.spec

    @pytest.fixture
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(
            {
                "condition": ["audio-visual", "audio"],
                "denoiser": ["unet", "dit"],
                "ae_width": [8],
                "unet_width": [16],
                "dit_width": [32],
                "cond_width": [8],
            }
        )

    @pytest.fixture
    def parts(self, architecture: Architecture, model: torch.nn.Module, splits: Splits) -> dict:
        return architecture.onnx_parts(model.eval(), splits)

    def test_forward_backward(self, model: torch.nn.Module, parts: dict, splits: Splits) -> None:  # type: ignore[override]
        model.train()
        loss = sum(p.module(*p.inputs).float().square().mean() for p in parts.values())
        clean, _, cond, frames = splits.test[:4]
        loss = loss + model(clean[:2], cond[:2], frames[:2]).square().mean()
        z, _, t, _ = parts["denoiser"].inputs  # the null condition of classifier-free guidance
        loss = loss + model.denoiser(z, z, t, model.denoiser.null.expand(len(z), -1)).mean()
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
            n for n, g in grads.items() if g is None
        ]
        assert any(g.abs().sum() > 0 for g in grads.values())

    def test_onnx_export_matches(self, model: torch.nn.Module, parts: dict) -> None:  # type: ignore[override]
        import onnxruntime

        from autoplat.core.export import to_onnx

        model.eval()
        assert set(parts) == {"condition", "denoiser", "encoder", "decoder"}
        for name, part in parts.items():
            names = [f"x{i}" for i in range(len(part.inputs))]
            onnx_bytes = to_onnx(
                part.module, tuple(part.inputs), input_names=names, output_name="y"
            )
            session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            feed = {n: x.numpy() for n, x in zip(names, part.inputs, strict=True)}
            (got,) = session.run(["y"], feed)
            with torch.no_grad():
                want = part.module(*part.inputs).float().numpy()
            assert got.shape == want.shape and abs(got - want).max() <= 1e-3, name


@pytest.fixture(scope="module")
def trained(scenes: Splits, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny audio-visual model trained for a few seconds, its reports and artifacts."""
    torch.manual_seed(0)
    model = SceneTransfer().build(TINY, scenes.spec)
    reports: list[dict] = []
    folder = tmp_path_factory.mktemp("artifacts")
    final = train_scene_transfer(
        model, scenes, TRAIN | {"eval_every": 2}, lambda e, m: reports.append(m), 0,
        artifact_dir=folder,
    )  # fmt: skip
    return {"model": model, "final": final, "reports": reports, "folder": folder}


@pytest.mark.slow  # trains for seconds
def test_training_reports_finite_metrics_and_beats_the_input(trained: dict) -> None:
    final, reports = trained["final"], trained["reports"]
    assert len(reports) == TRAIN["epochs"]
    assert "val_transfer_distance" not in reports[0] and "val_transfer_distance" in reports[1]
    assert all(np.isfinite(v) for k, v in final.items() if not k.startswith("artifact_"))
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    for split in ("val", "test"):  # the same run's unprocessed input is the baseline
        parts = ("distance", "noise", "decay")
        beaten = [p for p in parts if final[f"{split}_transfer_{p}"] < final[f"{split}_input_{p}"]]
        assert beaten, {k: v for k, v in final.items() if k.startswith(split)}
    assert final["val_transfer_vs_input"] == pytest.approx(
        final["val_transfer_distance"] / final["val_input_distance"]
    )
    assert final["val_recon_distance"] < final["val_input_distance"]


@pytest.mark.slow  # trains for seconds
def test_artifacts_are_wavs_and_a_spectrogram_png(trained: dict) -> None:
    final = trained["final"]
    paths = {k: Path(v) for k, v in final.items() if k.startswith("artifact_")}
    assert set(paths) == {
        "artifact_spectrograms", "artifact_clip0_input", "artifact_clip0_target",
        "artifact_clip0_output",
    }  # fmt: skip
    with Image.open(paths["artifact_spectrograms"]) as image:
        assert image.format == "PNG" and image.size[1] == 4 * 33 * 2  # 4 rows of 32 mels (+1), x2
    for key in ("artifact_clip0_input", "artifact_clip0_output"):
        with wave.open(str(paths[key])) as file:
            assert file.getframerate() == 8000 and file.getnchannels() == 1
            assert file.getsampwidth() == 2 and file.getnframes() == 64 * 64
            pcm = np.frombuffer(file.readframes(file.getnframes()), dtype="<i2")
        assert np.abs(pcm).max() > 100  # not silence
    assert not list(trained["folder"].glob(".*tmp"))


def test_griffin_lim_round_trip() -> None:
    splits = AVScenes().load(AVScenes.Options(n_train=2, n_val=1, n_test=1), seed=3)
    clips = splits.train[1][:4]
    mel = logmel(clips)
    filters = torch.from_numpy(mel_filterbank(8000, 256, 32)).double()
    magnitude = mel_to_magnitude((mel.double().exp() - 1e-5).clamp(min=0), filters)
    assert (
        filters @ magnitude.square() - (mel.double().exp() - 1e-5)
    ).abs().mean() < 0.2 * mel.exp().mean()
    rebuilt = griffin_lim(magnitude.float(), 256, 64, 4096)
    assert rebuilt.shape == clips.shape
    error = (logmel(rebuilt) - mel).abs().mean()
    other = (logmel(clips.roll(1, 0)) - mel).abs().mean()  # another clip's log-mel
    assert error < 0.25 * other, (float(error), float(other))
    # the model's inverse: the same path from its own (scaled) spectrograms
    model = SceneTransfer().build(TINY, splits.spec)
    again = waveforms(model, mel, 4096)
    assert (logmel(again) - mel).abs().mean() < 0.25 * other


def test_bad_params_are_refused_clearly(scenes: Splits) -> None:
    arch, spec = SceneTransfer(), scenes.spec
    assert arch.check_params({}, spec) is None
    assert "condition must be one of 'audio-visual', 'audio', 'visual', 'none', got 'video'" in (
        arch.check_params({"condition": "video"})
    )
    assert "n_mels 30 must be a multiple of 4" in arch.check_params({"n_mels": 30})
    assert "too short" in arch.check_params({"hop_length": 2048}, spec)
    assert "dit_heads" in arch.check_params({"denoiser": "dit", "dit_width": 30})
    digits = DataSpec("classification", "image", (1, 8, 8), 10)
    assert "needs scene-transfer clips" in arch.check_params({}, digits)
    with pytest.raises(ValueError, match="n_mels"):
        arch.build({"n_mels": 30}, spec)
    model = arch.build(TINY, spec)
    with pytest.raises(TrialFailed, match="cfg_dropout must be"):
        arch.train(model, scenes, {"cfg_dropout": 1.5}, lambda *a: None, 0)


def test_config_uses_the_example_and_refuses_a_bad_mode(write_config) -> None:
    registry = get_registry()
    resolved = load_config(EXAMPLE, registry)
    assert resolved.direction == "minimize"
    text = EXAMPLE.read_text().replace('"audio-visual", "audio", "visual", "none"', '"smell"')
    with pytest.raises(ConfigError, match="space.condition: must be one of"):
        load_config(write_config(text), registry)
    mixed = '"audio-visual", "smell"'  # one bad choice in the list: refused before any trial
    text = EXAMPLE.read_text().replace('"audio-visual", "audio", "visual", "none"', mixed)
    with pytest.raises(ConfigError, match="space.condition: must be one of .*got 'smell'"):
        load_config(write_config(text), registry)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=GPU_SKIP)
@pytest.mark.gpu
def test_one_training_step_on_cuda(scenes: Splits) -> None:
    torch.manual_seed(0)
    model = SceneTransfer().build(TINY, scenes.spec)
    one = TRAIN | {"epochs": 1, "ae_epochs": 1, "eval_clips": 4, "sample_steps": 2}
    final = train_scene_transfer(model, scenes, one, lambda *a: None, 0)
    assert next(model.parameters()).device.type == "cuda"
    assert np.isfinite(final["test_transfer_distance"])
