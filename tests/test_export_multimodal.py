"""ONNX export of multi-part models (CLIP and video-text towers, DINO features), the
tokenizer that travels with a text tower, and predict on text, images, videos, audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from autoplat.cli import main
from autoplat.core import export, predict
from autoplat.core.interfaces import OnnxPart
from autoplat.core.registry import get_registry
from autoplat.core.store import Store, TrialState
from autoplat.core.study import CHECKPOINT
from autoplat.core.training import save_checkpoint
from autoplat.plugins.datasets.captions import encode, train_tokenizer
from autoplat.plugins.datasets.shapes import generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPES = {"name": "shapes", "n_train": 64, "n_val": 16, "n_test": 24, "image_size": 16}
STUDIES = {
    "clip": (
        {"name": "clip"},
        SHAPES,
        {"image_tower": "cnn", "image_depth": 2, "image_width": 8, "text_depth": 1}
        | {"text_width": 16, "text_heads": 2, "embed_dim": 16, "epochs": 1, "batch_size": 32},
    ),
    "vt": (
        {"name": "video-text"},
        {"name": "moving-shapes", "videos": 24, "frames": 4, "size": 12, "events": 1},
        {"width": 16, "heads": 2, "embed_dim": 16, "frame_channels": 4}
        | {"epochs": 1, "batch_size": 8},
    ),
    "dino": (
        {"name": "dino"},
        SHAPES | {"captions": False},
        {"depth": 1, "width": 16, "heads": 2, "patch_size": 4, "prototypes": 16}
        | {"head_hidden": 16, "head_bottleneck": 8, "local_crops": 0, "epochs": 1}
        | {"batch_size": 32},
    ),
}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.replace("\n", " ")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with one study per family as `platform search` leaves it: a trial trained
    for real (one epoch on a few examples) and its checkpoint."""
    root = tmp_path_factory.mktemp("multimodal")
    url = f"sqlite:///{root}/runs.db"
    store = Store(url)
    registry = get_registry()
    out: dict = {"url": url, "root": root}
    for name, (arch_cfg, data_cfg, params) in STUDIES.items():
        raw = {"study": {"name": name, "seed": 0}, "architecture": arch_cfg, "dataset": data_cfg}
        row = store.create_study(name, config=json.dumps(raw), target_trials=1)
        arch = registry.get("architectures", arch_cfg["name"])
        dataset = registry.get("datasets", data_cfg["name"])
        options = {k: v for k, v in data_cfg.items() if k != "name"}
        splits = dataset.load(dataset.Options.model_validate(options), 0)
        model_params, _ = arch.split_params(params)
        torch.manual_seed(0)
        model = arch.build(model_params, splits.spec)
        metrics = arch.train(model, splits, params, lambda epoch, m: None, 0)
        trial = store.start_trial(row.id, params)
        store.add_metrics(trial.id, 1, metrics)
        store.finish_trial(trial.id, TrialState.COMPLETE, value=0.5)
        path = root / "checkpoints" / f"{name}.pt"
        save_checkpoint(model, path)
        store.add_artifact(row.id, trial.id, CHECKPOINT, str(path))
        out[name] = {"model": model.cpu().eval(), "splits": splits}
    return out


@pytest.fixture(scope="module")
def clip_files(trained: dict) -> dict[str, Path]:
    out = trained["root"] / "clip.onnx"
    assert main(["export", "clip", "--storage", trained["url"], "--out", str(out)]) == 0
    return {"image": out.with_name("clip.image.onnx"), "text": out.with_name("clip.text.onnx")}


def _meta(path: Path) -> dict[str, str]:
    props = onnx.load(str(path)).metadata_props
    return {p.key.removeprefix("autoplat."): p.value for p in props}


def test_clip_exports_one_file_per_tower_with_parity(trained: dict, clip_files, capsys) -> None:
    assert not (trained["root"] / "clip.onnx").exists()
    model, splits = trained["clip"]["model"], trained["clip"]["splits"]
    for part, file in clip_files.items():
        meta = _meta(file)
        assert meta["part"] == part and meta["study"] == "clip" and meta["architecture"] == "clip"
        assert json.loads(meta["parts"]) == {"image": "clip.image.onnx", "text": "clip.text.onnx"}
        assert float(meta["parity_max_abs_diff"]) <= 1e-4
        assert meta["output"].startswith("embedding") and "unit length" in meta["output"]
        assert float(meta["logit_scale"]) == pytest.approx(model.logit_scale().item())
    assert json.loads(_meta(clip_files["image"])["input_shape"]) == [3, 16, 16]
    assert "tokenizer" in _meta(clip_files["text"]) and "tokenizer" not in _meta(
        clip_files["image"]
    )
    session = predict.open_session(clip_files["image"], providers=["CPUExecutionProvider"])
    images = splits.test[0][:5]
    with torch.inference_mode():
        want = model.encode_image(images).numpy()
    np.testing.assert_allclose(predict.run_batches(session, images.numpy()), want, atol=1e-4)


def test_predicts_tokens_equal_the_datasets(trained: dict, clip_files) -> None:
    splits = trained["clip"]["splits"]
    rng = np.random.default_rng(0)
    n_train, n_val = SHAPES["n_train"], SHAPES["n_val"]
    _, captions, _, _ = generate(n_train + n_val + SHAPES["n_test"], 16, 0.05, rng)
    tokenizer = _meta(clip_files["text"])["tokenizer"]
    got = predict.tokenize(tokenizer, captions[n_train + n_val :])
    np.testing.assert_array_equal(got, splits.test[1].numpy())
    # unseen words, odd case and a caption longer than text_length: as the dataset would
    length = splits.spec.text_length
    odd = ["A RED circle, Left!", "zebra " * 40, ""]
    dataset_tokenizer = train_tokenizer(captions[:n_train], 512, 0)
    np.testing.assert_array_equal(
        predict.tokenize(tokenizer, odd), encode(dataset_tokenizer, odd, length).numpy()
    )


def test_predict_text_and_zero_shot_ranking(trained: dict, clip_files, tmp_path, capsys):
    model, splits = trained["clip"]["model"], trained["clip"]["splits"]
    texts = ["a red circle", "a small blue square at the top"]
    code, out, _ = _cli(capsys, "predict", str(clip_files["text"]), *texts, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["input"] for r in rows] == texts
    tokens = torch.from_numpy(predict.tokenize(_meta(clip_files["text"])["tokenizer"], texts))
    with torch.inference_mode():
        text_emb = model.encode_text(tokens)
    np.testing.assert_allclose([r["embedding"] for r in rows], text_emb.numpy(), atol=1e-4)

    pngs = []
    for i in range(3):
        pixels = (splits.test[0][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pngs.append(tmp_path / f"shape{i}.png")
        Image.fromarray(pixels).save(pngs[-1])
    npy = tmp_path / "emb.npy"
    args = ["predict", str(clip_files["image"]), *map(str, pngs), "--texts", *texts]
    code, out, _ = _cli(capsys, *args, "--json", "--out", str(npy))
    assert code == 0
    probs = np.array([list(r["texts"].values()) for r in json.loads(out)])
    read = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255) for p in pngs]
    )
    with torch.inference_mode():
        image_emb = model.encode_image(read.permute(0, 3, 1, 2))
        want = (model.logit_scale() * image_emb @ text_emb.T).softmax(dim=1).numpy()
    np.testing.assert_allclose(probs, want, atol=1e-4)
    np.testing.assert_allclose(np.load(npy), image_emb.numpy(), atol=1e-4)
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and "best text" in out
    # the text tower must sit beside the image tower; texts go to image/video parts only
    moved = tmp_path / "alone.onnx"
    moved.write_bytes(clip_files["image"].read_bytes())
    code, _, err = _cli(capsys, "predict", str(moved), str(pngs[0]), "--texts", "a")
    assert code == 2 and "not beside it: expected" in err and "clip.text.onnx" in err
    code, _, err = _cli(capsys, "predict", str(clip_files["text"]), "a", "--texts", "b")
    assert code == 2 and "is the text part itself" in err


def test_video_text_towers_export_and_predict(trained: dict, tmp_path, capsys) -> None:
    model, splits = trained["vt"]["model"], trained["vt"]["splits"]
    out = tmp_path / "vt.onnx"
    code, printed, _ = _cli(capsys, "export", "vt", "--storage", trained["url"], "--out", str(out))
    assert code == 0 and "as 2 files, one per part" in printed
    video, text = tmp_path / "vt.video.onnx", tmp_path / "vt.text.onnx"
    assert float(_meta(video)["parity_max_abs_diff"]) <= 1e-4
    assert json.loads(_meta(video)["input_shape"]) == [4, 3, 12, 12]
    videos = splits.test[0][:2]
    np.save(tmp_path / "clip.npy", videos[0].numpy())
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, frame in enumerate(videos[1]):  # named frame_0 .. frame_12: frame_12 sorts last
        pixels = (frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(frames / f"frame_{t * 4}.png")
    code, printed, _ = _cli(
        capsys, "predict", str(video), str(tmp_path / "clip.npy"), str(frames), "--json"
    )
    assert code == 0
    got = np.array([r["embedding"] for r in json.loads(printed)])
    with torch.inference_mode():
        want = model.encode_video(videos).numpy()
    np.testing.assert_allclose(got, want, atol=2e-2)  # the frames went through 8-bit PNGs
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)
    code, printed, _ = _cli(capsys, "predict", str(video), str(frames), "--texts", "a red ball")
    assert code == 0 and "a red ball" in printed
    code, printed, _ = _cli(capsys, "predict", str(text), "a red ball moves left", "--json")
    tokens = predict.tokenize(_meta(text)["tokenizer"], ["a red ball moves left"])
    assert code == 0 and tokens.shape == (1, splits.spec.text_length)
    with torch.inference_mode():
        want = model.encode_text(torch.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(json.loads(printed)[0]["embedding"], want[0], atol=1e-4)


def test_dino_exports_its_feature_extractor(trained: dict, tmp_path, capsys) -> None:
    model, splits = trained["dino"]["model"], trained["dino"]["splits"]
    out = tmp_path / "dino.onnx"
    code, printed, _ = _cli(
        capsys, "export", "dino", "--storage", trained["url"], "--out", str(out)
    )
    assert code == 0 and out.exists() and "IMAGE.png" in printed
    meta = _meta(out)
    assert meta["part"] == "features" and "parts" not in meta and "labels" not in meta
    np.save(tmp_path / "x.npy", splits.test[0][:4].numpy())
    code, printed, _ = _cli(capsys, "predict", str(out), str(tmp_path / "x.npy"), "--json")
    with torch.inference_mode():
        want = model(splits.test[0][:4]).numpy()
    assert code == 0 and want.shape == (4, 16)
    np.testing.assert_allclose([r["embedding"] for r in json.loads(printed)], want, atol=1e-4)
    code, printed, _ = _cli(capsys, "predict", str(out), str(tmp_path / "x.npy"))
    assert code == 0 and "embedding (16,)" in printed


class _FFT(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x.flatten(1)).abs()


def test_a_part_that_cannot_export_names_the_op(trained, tmp_path, capsys, monkeypatch) -> None:
    dino = get_registry().get("architectures", "dino")

    def parts(model, splits):
        good = OnnxPart(model, (splits.test[0],), ("image",), "image", "embedding")
        return {"good": good, "bad": OnnxPart(_FFT(), (splits.test[0],))}

    monkeypatch.setattr(dino, "onnx_parts", parts)
    out = tmp_path / "never.onnx"
    code, _, err = _cli(capsys, "export", "dino", "--storage", trained["url"], "--out", str(out))
    assert code == 2 and "Traceback" not in err
    assert "part 'bad' of dino: cannot export to ONNX opset 17" in err
    assert "'aten::fft_rfft'" in err and "is not supported" in err and "nothing written" in err
    assert list(tmp_path.iterdir()) == []


def test_studies_without_weights_say_what_to_do(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    store = Store(url)
    table = {"study": {"name": "table"}, "benchmark": {"name": "nb201"}}
    none = {"study": {"checkpoints": "none"}, "architecture": {"name": "vit"}}
    for name, raw in (("table", table), ("none", none | {"dataset": {"name": "digits"}})):
        row = store.create_study(name, config=json.dumps(raw))
        trial = store.start_trial(row.id, {})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=0.9)
    code, _, err = _cli(capsys, "export", "table", "--storage", url)
    assert code == 2 and "tabular-benchmark study" in err and "train no model" in err
    assert "examples/nas_digits.toml" in err and 'checkpoints = "all"' not in err
    code, _, err = _cli(capsys, "export", "none", "--storage", url)
    assert code == 2 and 'checkpoints = "none"' in err and 'checkpoints = "best"' in err


def test_audio_and_multi_input_parts_plug_in(trained: dict, tmp_path, capsys) -> None:
    """What an audio family (waveform in) and a diffusion denoiser (two inputs) get."""
    import soundfile as sf

    base = export.load_trial_model(Store(trained["url"], create=False), "dino")
    torch.manual_seed(0)
    audio = torch.nn.Sequential(torch.nn.Linear(800, 8))
    wave = torch.randn(5, 800)

    class Denoiser(torch.nn.Module):
        def forward(self, latent: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return latent * torch.cos(timestep.float())[:, None]

    base.parts = {
        "audio": OnnxPart(audio, (wave,), ("audio",), "audio", "embedding", {"sample_rate": 8000}),
        "denoiser": OnnxPart(
            Denoiser(), (torch.randn(5, 4), torch.arange(5)), ("latent", "timestep"), "", "noise"
        ),
    }
    done = export.export_trial(base, tmp_path / "m.onnx")
    assert [d.path.name for d in done] == ["m.audio.onnx", "m.denoiser.onnx"]
    assert all(d.max_abs_diff <= 1e-5 for d in done)
    sf.write(tmp_path / "a.wav", wave[0, :600].numpy() / 5, 8000)  # short: zero-padded
    code, out, _ = _cli(capsys, "predict", str(done[0].path), str(tmp_path / "a.wav"), "--json")
    read = torch.from_numpy(sf.read(tmp_path / "a.wav", dtype="float32")[0])
    with torch.inference_mode():
        want = audio(torch.nn.functional.pad(read, (0, 200))[None]).numpy()
    assert code == 0
    np.testing.assert_allclose(json.loads(out)[0]["embedding"], want[0], atol=1e-4)
    sf.write(tmp_path / "b.wav", wave[0].numpy() / 5, 16000)
    code, _, err = _cli(capsys, "predict", str(done[0].path), str(tmp_path / "b.wav"))
    assert code == 2 and "sampled at 16000 Hz; the model takes 8000 Hz" in err
    np.savez(tmp_path / "z.npz", latent=np.ones((2, 4), np.float32), timestep=np.array([0, 3]))
    code, out, _ = _cli(capsys, "predict", str(done[1].path), str(tmp_path / "z.npz"), "--json")
    assert code == 0
    np.testing.assert_allclose([r["noise"] for r in json.loads(out)], [[1] * 4, [np.cos(3)] * 4])
    code, _, err = _cli(capsys, "predict", str(done[1].path), str(tmp_path / "a.wav"))
    assert code == 2 and "takes 2 inputs (latent, timestep)" in err
