"""The video-text family: moving-shapes and video-captions data, the VideoCLIP-style
model, its samplers, auxiliary losses and trainer."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from autoplat.core.config import load_config
from autoplat.core.errors import DataError
from autoplat.core.interfaces import DataSpec, Splits
from autoplat.core.registry import get_registry
from autoplat.core.training import TrialFailed
from autoplat.plugins.architectures.video_text import (
    VideoText,
    batch_losses,
    clip_masks,
    kmeans,
    retrieval_batches,
    sample_captions,
    sample_clips,
)
from autoplat.plugins.datasets.video import (
    MovingShapes,
    MovingShapesOptions,
    VideoCaptions,
    VideoCaptionsOptions,
    render_moving_shapes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE = Path(__file__).parent.parent / "examples" / "video_text.toml"
SMALL = {"videos": 240, "frames": 8, "size": 16, "events": 2}
TRAIN = {
    "epochs": 10,
    "batch_size": 16,
    "lr": 3e-3,
    "warmup_epochs": 1,
    "clip_min_frames": 2,
    "clip_max_frames": 8,
}
AUX = {"mmm_weight": 0.5, "support_set_weight": 0.5}


def _train(model, splits: Splits, params: dict, seed: int = 0) -> list[dict[str, float]]:
    reports: list[tuple[int, dict[str, float]]] = []
    final = VideoText().train(model, splits, params, lambda e, m: reports.append((e, m)), seed)
    assert [e for e, _ in reports] == list(range(1, len(reports) + 1))
    assert final == reports[-1][1]
    return [m for _, m in reports]


@pytest.fixture(scope="module")
def shapes() -> Splits:
    return MovingShapes().load(MovingShapesOptions(**SMALL), seed=0)


@pytest.fixture(scope="module")
def tiny() -> Splits:
    return MovingShapes().load(MovingShapesOptions(videos=40, frames=8, size=16), seed=0)


@pytest.fixture(scope="module")
def trained(shapes: Splits):
    torch.manual_seed(0)
    model = VideoText().build({}, shapes.spec)
    return model, _train(model, shapes, TRAIN)


# -- moving-shapes ---------------------------------------------------------------------
def test_moving_shapes_layout(shapes: Splits) -> None:
    spec = shapes.spec
    assert (spec.task, spec.modality) == ("video_text", "video-text")
    assert spec.input_shape == (8, 3, 16, 16)
    assert spec.text_length == 10 and 32 <= spec.vocab_size <= 96
    sizes = []
    for part in (shapes.train, shapes.val, shapes.test):
        videos, tokens, spans, mask = part
        n = len(videos)
        sizes.append(n)
        assert videos.shape == (n, 8, 3, 16, 16) and videos.dtype == torch.float32
        assert tokens.shape == (n, 2, 10) and tokens.dtype == torch.int64
        assert spans.shape == (n, 2, 2) and mask.shape == (n, 2) and mask.dtype == torch.bool
        assert mask.all() and videos.min() >= 0 and videos.max() <= 1
        assert (spans[..., 0] >= 0).all() and (spans[..., 0] < spans[..., 1]).all()
        assert (spans[..., 1] <= 8).all() and (spans[:, 0, 1] <= spans[:, 1, 0]).all()
        assert int(tokens.max()) < spec.vocab_size and (tokens[:, :, 0] == 2).all()  # BOS
    assert sum(sizes) == 240 and sizes[1] == sizes[2] == 36


def test_moving_shapes_draws_each_event_in_its_span() -> None:
    videos, captions, spans = render_moving_shapes(20, 12, 24, 3, seed=5)
    assert len(captions) == 20 and all(len(c) == 3 for c in captions)
    assert all(c.startswith("a ") and len(c.split()) == 6 for row in captions for c in row)
    lit = videos.reshape(20, 12, -1).max(-1) > 0  # which frames show a shape
    inside = np.zeros((20, 12), bool)
    for i in range(20):
        for start, end in spans[i].astype(int):
            inside[i, start:end] = True
    assert np.array_equal(lit, inside)
    # "moves right": the shape's centre of mass moves right over its span
    for i, row in enumerate(captions):
        for (start, end), caption in zip(spans[i].astype(int), row, strict=True):
            mass = videos[i, start:end].sum(1)
            xs = (mass.sum(1) * np.arange(24)).sum(-1) / mass.sum((1, 2))
            ys = (mass.sum(2) * np.arange(24)).sum(-1) / mass.sum((1, 2))
            move = {"right": xs[-1] - xs[0], "left": xs[0] - xs[-1], "down": ys[-1] - ys[0]}
            assert move.get(caption.split()[-1], ys[0] - ys[-1]) > 2, caption


def test_moving_shapes_deterministic_by_seed(tiny: Splits) -> None:
    options = MovingShapesOptions(videos=40, frames=8, size=16)
    again = MovingShapes().load(options, seed=0)
    other = MovingShapes().load(options, seed=1)
    for a, b in zip(tiny.train, again.train, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(tiny.train[0], other.train[0][: len(tiny.train[0])])
    with pytest.raises(ValueError, match="need at least 8 frames"):
        MovingShapesOptions(frames=6, events=4)


# -- samplers --------------------------------------------------------------------------
def test_overlapping_positives_overlap_their_span() -> None:
    g = torch.Generator().manual_seed(0)
    n, frames = 20_000, 16
    start = torch.randint(0, frames - 1, (n,), generator=g).float()
    spans = torch.stack([start, start + 1 + torch.rand(n, generator=g) * (frames - start - 1)], 1)
    first, last = sample_clips(spans, frames, 2, 10, g)
    length = last - first
    assert (first >= 0).all() and (last <= frames).all()
    assert (length >= 2).all() and (length <= 10).all() and len(set(length.tolist())) == 9
    assert ((last > spans[:, 0]) & (first < spans[:, 1])).all()  # every clip overlaps its span
    exact = (first == spans[:, 0].floor()) & (last == spans[:, 1].ceil())
    assert exact.float().mean() < 0.2  # overlapping, not aligned
    again = sample_clips(spans, frames, 2, 10, torch.Generator().manual_seed(1))
    assert not torch.equal(again[0], first)
    mask = clip_masks(first[:5], last[:5], frames)
    assert torch.equal(mask.sum(1), length[:5])
    picks = sample_captions(torch.tensor([[True, False, True]] * 2000), g)
    assert set(picks.tolist()) == {0, 2}


def test_retrieval_batches_group_neighbours() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 16, generator=g) * 3
    labels = torch.arange(8).repeat_interleave(32)
    points = centres[labels] + 0.3 * torch.randn(256, 16, generator=g)
    batches = retrieval_batches(points, 32, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(batches).tolist()) == list(range(256))
    unit = torch.nn.functional.normalize(points, dim=-1)

    def mean_distance(idx: torch.Tensor) -> float:
        d = torch.cdist(unit[idx], unit[idx])
        return (d.sum() / (len(idx) * (len(idx) - 1))).item()

    within = np.mean([mean_distance(b) for b in batches])
    shuffled = np.mean([mean_distance(b) for b in torch.randperm(256, generator=g).split(32)])
    assert within < 0.3 * shuffled
    first = kmeans(points, 8, torch.Generator().manual_seed(3))
    assert torch.equal(first, kmeans(points, 8, torch.Generator().manual_seed(3)))


def test_retrieval_batches_on_trained_embeddings(trained, shapes: Splits) -> None:
    from autoplat.plugins.architectures.video_text import embed_videos

    model, _ = trained
    emb = embed_videos(model, shapes.train[0], torch.device("cpu"))
    batches = retrieval_batches(emb, 16, torch.Generator().manual_seed(0))
    sim = emb @ emb.T
    within = np.mean([sim[b][:, b].mean().item() for b in batches])
    order = torch.randperm(len(emb), generator=torch.Generator().manual_seed(0))
    random = np.mean([sim[b][:, b].mean().item() for b in order.split(16)])
    assert within > random + 0.1


# -- model and trainer -----------------------------------------------------------------
def test_training_learns_retrieval(trained, shapes: Splits) -> None:
    _, reports = trained
    first, last = reports[0], reports[-1]
    assert last["train_loss"] < first["train_loss"] - 0.5
    assert last["val_loss"] < first["val_loss"]
    chance = 1 / len(shapes.val[0])
    assert last["val_recall_at_1"] > 3 * chance
    assert last["test_recall_at_1"] > 3 * chance
    assert last["val_recall_at_10"] > 1.4 * min(1.0, 10 * chance)  # chance ~0.28 here
    assert last["val_median_rank"] < len(shapes.val[0]) / 3
    metrics = set(VideoText.metrics) | {"train_loss", "train_contrastive_loss"}
    assert set(first) == metrics
    assert set(last) == metrics | {f"test_{k[4:]}" for k in VideoText.metrics}


def test_trainer_is_deterministic_by_seed(tiny: Splits) -> None:
    params = {"epochs": 2, "batch_size": 8, "retrieval_batches": True} | AUX

    def run(seed: int, noise: int) -> list:
        torch.manual_seed(0)
        model = VideoText().build({"width": 32, "dropout": 0.1}, tiny.spec)
        torch.manual_seed(noise)  # the trainer seeds torch itself
        return _train(model, tiny, params, seed)

    first = run(7, 1)
    assert run(7, 2) == first
    assert run(8, 1) != first


def test_auxiliary_losses_are_finite_differentiable_and_fall(shapes: Splits) -> None:
    torch.manual_seed(0)
    model = VideoText().build({}, shapes.spec)
    videos, tokens, spans, mask = (t[:32] for t in shapes.val)
    hp = AUX | {"mmm_mask_ratio": 0.3}

    def losses() -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        caption = sample_captions(mask, g)
        clip = clip_masks(*sample_clips(spans[torch.arange(32), caption], 8, 2, 8, g), 8)
        return batch_losses(model, videos, tokens[torch.arange(32), caption], clip, hp, g)

    before = losses()
    assert set(before) == {"loss", "contrastive", "mmm", "support_set"}
    assert all(torch.isfinite(v) for v in before.values())
    before["loss"].backward()
    heads = [model.mmm_text, model.mmm_frame, model.support_set, model.text_tower]
    for module in heads:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    model.zero_grad()
    reports = _train(model, shapes, TRAIN | AUX | {"epochs": 3, "retrieval_batches": True})
    assert reports[-1]["train_mmm_loss"] < reports[0]["train_mmm_loss"]
    assert reports[-1]["train_support_set_loss"] < reports[0]["train_support_set_loss"]
    with torch.no_grad():
        after = losses()
    assert after["mmm"] < before["mmm"] and after["support_set"] < before["support_set"]


def test_trainer_fails_on_nan_and_bad_params(tiny: Splits) -> None:
    model = VideoText().build({"width": 32}, tiny.spec)
    with pytest.raises(TrialFailed, match=r"(NaN|infinite) at epoch \d"):
        _train(model, tiny, {"epochs": 3, "lr": 1e12, "batch_size": 8})
    with pytest.raises(TrialFailed, match="clip_min_frames"):
        _train(model, tiny, {"clip_min_frames": 5, "clip_max_frames": 3})


def test_check_params() -> None:
    arch = VideoText()
    assert arch.check_params({}) is None
    assert "divisible" in arch.check_params({"width": 30, "heads": 4})
    spec = DataSpec("video_text", "video-text", (4, 3, 8, 8), vocab_size=40, text_length=8)
    image_spec = DataSpec("video_text", "video-text", (3, 8, 8), vocab_size=40, text_length=8)
    assert "(T, C, H, W)" in arch.check_params({}, image_spec)
    with pytest.raises(ValueError, match="dropout"):
        arch.build({"dropout": 1.5}, spec)


def test_towers_export_to_onnx_separately(shapes: Splits) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = VideoText().build({"width": 32, "temporal_depth": 2}, shapes.spec).eval()
    videos, tokens = shapes.val[0][:3], shapes.val[1][:3, 0]
    for tower, x in ((model.video_tower, videos), (model.text_tower, tokens)):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tower,
                (x,),
                buffer,
                dynamo=False,
                opset_version=17,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            )
        session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            want = tower(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)
    with torch.no_grad():
        assert model(videos, tokens).shape == (3, 3)


# -- video-captions: files -------------------------------------------------------------
def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), value, np.uint8)).save(path)


@pytest.fixture
def video_files(tmp_path: Path) -> Path:
    """Five videos (two frame folders, three .npy) and a JSONL of their captions."""
    for i in range(12):  # frame_2 sorts before frame_10
        _png(tmp_path / "vids" / "a" / f"frame_{i}.png", 20 * i)
    for i in range(3):
        _png(tmp_path / "vids" / "b" / f"{i}.jpg", 200)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "vids" / "c.npy", rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8))
    np.save(tmp_path / "vids" / "d.npy", rng.random((20, 6, 6)).astype(np.float32))
    np.save(tmp_path / "vids" / "e.npy", rng.random((4, 6, 6, 1)))
    rows = [
        ("a", "a bright fade", 0.0, 3.0),
        ("a", "the end of the fade", 4.0, 10.0),
        ("b", "a grey still", 0.5, 1.5),
        ("c", "noise", 1.0, 2.0),
        ("d", "grey noise", 0.0, 20.0),
        ("e", "short grey noise", 1.0, 2.0),
    ]
    text = "\n".join(
        json.dumps(
            {
                "video": f"vids/{v}" + (".npy" if v in "cde" else ""),
                "caption": c,
                "start": s,
                "end": e,
            }
        )
        for v, c, s, e in rows
    )
    (tmp_path / "captions.jsonl").write_text(text + "\n\n")
    return tmp_path


def _options(root: Path, **extra) -> VideoCaptionsOptions:
    return VideoCaptionsOptions(
        path=root / "captions.jsonl",
        frames=4,
        size=8,
        fps=2.0,
        val_fraction=0.2,
        test_fraction=0.2,
        **extra,
    )


def test_video_captions_reads_folders_and_npy(video_files: Path, monkeypatch) -> None:
    splits = VideoCaptions().load(_options(video_files), seed=0)
    assert splits.spec.input_shape == (4, 3, 8, 8) and splits.spec.text_length == 16
    parts = (splits.train, splits.val, splits.test)
    assert [len(p[0]) for p in parts] == [3, 1, 1]
    videos = torch.cat([p[0] for p in parts])
    assert videos.dtype == torch.float32 and videos.min() >= 0 and videos.max() <= 1
    spans = torch.cat([p[2] for p in parts])
    masks = torch.cat([p[3] for p in parts])
    assert spans.shape == (5, 2, 2) and masks.sum() == 6
    # video "a": 12 frames (values 0, 20, ..., 220) at 2 fps, resampled to 4 frames: its
    # frames 1, 4, 7, 10 in natural order; spans: seconds * 2 * 4 / 12, cut at 4
    pixel = videos[:, :, 0, 0, 0] * 255
    want = torch.tensor([20.0, 80, 140, 200])
    (a,) = [i for i, row in enumerate(pixel) if torch.allclose(row, want, atol=1.5)]
    assert torch.allclose(spans[a], torch.tensor([[0.0, 2.0], [8 / 3, 4.0]]))
    assert masks[a].all() and masks.sum(1).tolist().count(1) == 4
    again = VideoCaptions().load(_options(video_files), seed=0)
    assert torch.equal(again.test[0], splits.test[0])
    grey = VideoCaptions().load(_options(video_files, channels=1), seed=0)
    assert grey.spec.input_shape == (4, 1, 8, 8)
    (video_files / "elsewhere").mkdir()
    (video_files / "vids").rename(video_files / "elsewhere" / "vids")
    monkeypatch.chdir(video_files)
    options = _options(video_files, videos="elsewhere")
    monkeypatch.chdir(video_files / "elsewhere")  # trials run in other folders
    assert options.videos == video_files / "elsewhere"
    moved = VideoCaptions().load(options, seed=0)
    assert torch.equal(moved.test[0], splits.test[0])


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: (root / "captions.jsonl").unlink(), r"captions\.jsonl does not exist"),
        (lambda root: _append(root, "{not json"), r"captions\.jsonl:7: not valid JSON"),
        (lambda root: _append(root, '{"video": "vids/a"}'), r":7: missing caption, start, end"),
        (
            lambda root: _append(root, _row("vids/a", 5.0, 4.0)),
            r":7: 'start' and 'end' must be seconds",
        ),
        (lambda root: _append(root, _row("vids/zz.npy", 0, 1)), r"vids/zz\.npy does not exist"),
        (
            lambda root: (root / "vids" / "b" / "1.jpg").write_bytes(b"not a jpeg"),
            r"1\.jpg: cannot read the image",
        ),
        (lambda root: (root / "vids" / "c.npy").write_bytes(b"garbage"), r"c\.npy: cannot read"),
        (
            lambda root: np.save(root / "vids" / "c.npy", np.zeros((2, 3, 4, 5, 6))),
            r"c\.npy: a \.npy video must be shaped",
        ),
        (lambda root: _append(root, _row("vids/e.npy", 3.0, 4.0)), r"starts at 3\.0 s, after"),
        (
            lambda root: [p.unlink() for p in (root / "vids" / "b").iterdir()],
            r"vids/b holds no frame images",
        ),
    ],
    ids=["missing", "json", "keys", "span", "video", "png", "npy", "shape", "late", "empty"],
)
def test_video_captions_errors_name_the_file(video_files: Path, breakage, message: str) -> None:
    breakage(video_files)
    with pytest.raises(DataError, match=message):
        VideoCaptions().load(_options(video_files), seed=0)


def _row(video: str, start: float, end: float) -> str:
    return json.dumps({"video": video, "caption": "x", "start": start, "end": end})


def _append(root: Path, line: str) -> None:
    path = root / "captions.jsonl"
    path.write_text(path.read_text().rstrip("\n") + "\n" + line + "\n")


def test_video_captions_skip_bad_counts(video_files: Path, caplog) -> None:
    (video_files / "vids" / "c.npy").write_bytes(b"garbage")
    _append(video_files, "{not json")
    _append(video_files, _row("vids/e.npy", 3.0, 4.0))
    dataset = VideoCaptions()
    with caplog.at_level(logging.WARNING):
        splits = dataset.load(_options(video_files, skip_bad=True), seed=0)
    assert sum(len(p[0]) for p in (splits.train, splits.val, splits.test)) == 4
    assert len(dataset.skipped) == 3
    assert "skipped 3 bad entries" in caplog.text and "c.npy" in caplog.text
    for name in ("a", "b", "d.npy"):
        (video_files / "vids" / name).rename(video_files / f"gone-{name}")
    with pytest.raises(DataError, match="only 1 readable videos"):
        dataset.load(_options(video_files, skip_bad=True), seed=0)


# -- plugins, config, search -----------------------------------------------------------
def test_registered_and_example_validates() -> None:
    registry = get_registry()
    assert isinstance(registry.get("architectures", "video-text"), VideoText)
    assert isinstance(registry.get("datasets", "moving-shapes"), MovingShapes)
    assert isinstance(registry.get("datasets", "video-captions"), VideoCaptions)
    resolved = load_config(EXAMPLE, registry)
    assert resolved.direction == "maximize"
    assert {"retrieval_batches", "mmm_weight", "support_set_weight"} <= set(resolved.space.dims)


@pytest.mark.slow
def test_search_runs_video_text_trials(write_config, tmp_path: Path, ray_address: str) -> None:
    from autoplat.core.store import Store, TrialState
    from autoplat.core.study import run_study

    path = write_config(
        """
        [study]
        name = "vt"
        trials = 2
        metric = "val_median_rank"

        [architecture]
        name = "video-text"

        [dataset]
        name = "moving-shapes"
        videos = 40
        frames = 8
        size = 16

        [space]
        width = [32]
        epochs = 2
        batch_size = 8

        [strategy]
        name = "random"
        """,
        name="vt",
    )
    store = Store(f"sqlite:///{tmp_path}/vt.db")
    run_study(load_config(path, get_registry()), store, address=ray_address)
    trials = store.trials(store.get_study("vt").id)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.error for t in trials]
    assert all(1 <= t.value <= 6 for t in trials)  # median rank among 6 val videos
