"""The conformance contracts (autoplat.testing) on the multi-input families: clip,
video-text and audio-visual architectures; the shapes, image-captions, video-captions,
moving-shapes and audio-visual-events datasets.

The contracts assume one input tensor and (x, y) splits; these families have several
(images and tokens, audio and images, videos with captions, spans and masks). The two
contract tests that assume one tensor are generalized here, over the parts `platform
export` writes and over every tensor of a split; every other contract test runs as is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoplat.core.export import to_onnx
from autoplat.core.interfaces import Architecture, Dataset, DataSpec, Options, Splits
from autoplat.core.registry import get_registry
from autoplat.plugins.datasets.video import render_moving_shapes
from autoplat.testing import ArchitectureContract, DatasetContract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "shapes": {"n_train": 16, "n_val": 6, "n_test": 6, "image_size": 8},
    "moving-shapes": {"videos": 12, "frames": 4, "size": 12, "events": 2},
    "audio-visual-events": {"n_train": 16, "n_val": 6, "n_test": 6, "duration": 0.1},
}


def small(name: str, **extra) -> tuple[Dataset, Options, Splits]:
    dataset = get_registry().get("datasets", name)
    options = dataset.Options(**SMALL.get(name, {}), **extra)
    return dataset, options, dataset.load(options, 0)


class MultiPartContract(ArchitectureContract):
    """The architecture contract over each part `platform export` writes (its
    ``onnx_parts`` on real splits): every part runs forward and backward, and exports."""

    dataset_name = ""

    @pytest.fixture
    def splits(self) -> Splits:
        return small(self.dataset_name)[2]

    @pytest.fixture
    def data_spec(self, splits: Splits) -> DataSpec:
        return splits.spec

    @pytest.fixture
    def parts(self, architecture: Architecture, model: torch.nn.Module, splits: Splits) -> dict:
        return architecture.onnx_parts(model.eval(), splits)

    def test_forward_backward(self, model: torch.nn.Module, parts: dict) -> None:  # type: ignore[override]
        model.train()
        loss = sum(p.module(*p.inputs).float().square().mean() for p in parts.values())
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), "every gradient is zero"

    def test_onnx_export_matches(self, model: torch.nn.Module, parts: dict) -> None:  # type: ignore[override]
        import onnxruntime

        model.eval()
        for name, part in parts.items():
            names = [f"x{i}" for i in range(len(part.inputs))]
            part.module.eval()  # as export does: the wrapper a part may be starts training
            onnx_bytes = to_onnx(
                part.module, tuple(part.inputs), input_names=names, output_name="y"
            )
            session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            feed = {n: x.numpy() for n, x in zip(names, part.inputs, strict=True)}
            (got,) = session.run(["y"], feed)
            with torch.no_grad():
                want = part.module(*part.inputs).float().numpy()
            assert got.shape == want.shape and abs(got - want).max() <= 1e-4, name


class TestCLIP(MultiPartContract):
    dataset_name = "shapes"

    @pytest.fixture
    def architecture(self) -> Architecture:
        return get_registry().get("architectures", "clip")


class TestVideoText(MultiPartContract):
    dataset_name = "moving-shapes"

    @pytest.fixture
    def architecture(self) -> Architecture:
        return get_registry().get("architectures", "video-text")


class TestAudioVisual(MultiPartContract):
    dataset_name = "audio-visual-events"

    @pytest.fixture
    def architecture(self) -> Architecture:
        return get_registry().get("architectures", "audio-visual")


# -- datasets --------------------------------------------------------------------------
class MultiTensorContract(DatasetContract):
    """The dataset contract for splits of several tensors: the inputs first, then (for
    classification) the labels."""

    dataset_name = ""
    extra: dict = {}

    @pytest.fixture
    def dataset(self) -> Dataset:
        return get_registry().get("datasets", self.dataset_name)

    @pytest.fixture
    def options(self, dataset: Dataset) -> Options:
        return dataset.Options(**SMALL.get(self.dataset_name, {}), **self.extra)

    def test_spec_matches_tensors(self, dataset: Dataset, options: Options, splits: Splits) -> None:  # type: ignore[override]
        spec = splits.spec
        modality, tasks = dataset.kind(options)
        assert spec.task in tasks and spec.modality == modality
        for name in ("train", "val", "test"):
            tensors = getattr(splits, name)
            x = tensors[0]
            assert len(x) > 0, f"the {name} split is empty"
            if name == "train":  # evaluation splits may add e.g. one prompt per class
                assert all(len(t) == len(x) for t in tensors)
            assert tuple(x.shape[1:]) == spec.input_shape[: x.dim() - 1]
            assert x.is_floating_point() and torch.isfinite(x).all()
            for t in tensors[1:]:
                if t.dtype == torch.int64 and spec.text_length and t.shape[-1] == spec.text_length:
                    assert int(t.min()) >= 0 and int(t.max()) < spec.vocab_size  # tokens
            if spec.task == "classification":
                y = tensors[-1]
                assert (
                    len(y) == len(x) and y.dtype == torch.int64 and int(y.max()) < spec.num_classes
                )
        if splits.train_sources:
            assert len(splits.train_sources) == len(splits.train[0])


class TestShapes(MultiTensorContract):
    dataset_name = "shapes"


class TestShapesAsImages(MultiTensorContract):
    dataset_name = "shapes"
    extra = {"captions": False}


class TestMovingShapes(MultiTensorContract):
    dataset_name = "moving-shapes"


class TestAudioVisualEvents(MultiTensorContract):
    dataset_name = "audio-visual-events"


class TestImageCaptions(MultiTensorContract):
    dataset_name = "image-captions"

    @pytest.fixture
    def options(self, dataset: Dataset, tmp_path: Path) -> Options:
        rng = np.random.default_rng(0)
        lines = []
        for i in range(12):
            color = ("red", "green", "blue")[i % 3]
            pixels = rng.integers(0, 40, (8, 8, 3))
            pixels[..., i % 3] += 200
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / f"{i}.png")
            lines.append(json.dumps({"path": f"{i}.png", "caption": f"a {color} square {i}"}))
        (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
        return dataset.Options(path=tmp_path / "captions.jsonl", image_size=8)


class TestVideoCaptions(MultiTensorContract):
    dataset_name = "video-captions"

    @pytest.fixture
    def options(self, dataset: Dataset, tmp_path: Path) -> Options:
        videos, captions, spans = render_moving_shapes(9, 4, 12, 2, seed=0)
        lines = []
        for i, video in enumerate(videos):
            np.save(tmp_path / f"v{i}.npy", video.transpose(0, 2, 3, 1))
            for text, (start, end) in zip(captions[i], spans[i], strict=True):
                row = {"video": f"v{i}.npy", "caption": text, "start": float(start)}
                lines.append(json.dumps({**row, "end": float(end)}))
        (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
        return dataset.Options(path=tmp_path / "captions.jsonl", frames=4, size=12)
