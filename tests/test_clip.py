"""CLIP, the shapes dataset and the caption tokenizer: layout, determinism, training, config."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from autoplat.core.config import load_config
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import DataSpec
from autoplat.core.registry import get_registry
from autoplat.core.training import TrialFailed
from autoplat.plugins.architectures.clip import (
    CLIP,
    CLIPModel,
    contrastive_loss,
    evaluate_contrastive,
    recall_at_k,
    same_rows,
)
from autoplat.plugins.datasets.captions import (
    BOS_ID,
    BYTE_VOCAB_SIZE,
    EOS_ID,
    PAD_ID,
    decode,
    encode,
    token_lengths,
    train_tokenizer,
)
from autoplat.plugins.datasets.shapes import (
    COLORS,
    POSITIONS,
    SHAPES,
    Shapes,
    ShapesOptions,
    generate,
)
from autoplat.testing import run_platform

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = [
    "a large red circle on the left",
    "a photo of a small blue square at the top",
    "in the center, a large green triangle",
    "Two CATS, sleeping!",
]
SMALL = {  # a CNN image tower and a one-block text tower: fast on one core
    "image_tower": "cnn",
    "image_depth": 3,
    "image_width": 16,
    "text_depth": 1,
    "text_width": 32,
    "text_heads": 2,
    "text_causal": False,
    "text_pooling": "mean",
    "embed_dim": 32,
}


@pytest.fixture(scope="module")
def small_shapes():
    return Shapes().load(ShapesOptions(n_train=64, n_val=40, n_test=40, image_size=16), seed=0)


# -- tokenizer ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_tokenizer_round_trips_and_pads(kind: str) -> None:
    tokenizer = train_tokenizer(CAPTIONS * 5, vocab_size=64, seed=0, kind=kind)
    tokens = encode(tokenizer, CAPTIONS, 64)
    assert tokens.dtype == torch.int64 and tokens.shape == (len(CAPTIONS), 64)
    assert (tokens[:, 0] == BOS_ID).all()
    lengths = token_lengths(tokens)
    assert (tokens[torch.arange(len(tokens)), lengths - 1] == EOS_ID).all()
    assert all((row[n:] == PAD_ID).all() for row, n in zip(tokens, lengths, strict=True))
    decoded = decode(tokenizer, tokens)
    if kind == "byte":
        assert decoded == [c.lower() for c in CAPTIONS]
        assert tokenizer.get_vocab_size() == BYTE_VOCAB_SIZE
    else:  # words and punctuation come back separated by single spaces
        expected = [" ".join(re.findall(r"\w+|[^\w\s]+", c.lower())) for c in CAPTIONS]
        assert decoded == expected
        assert tokenizer.get_vocab_size() <= 64


def test_tokenizer_is_deterministic_and_truncates_to_eos() -> None:
    first = train_tokenizer(CAPTIONS * 3, vocab_size=48)
    again = train_tokenizer(list(reversed(CAPTIONS * 3)), vocab_size=48, seed=5)
    assert first.to_str() == again.to_str()
    short = encode(first, CAPTIONS, 4)
    assert (short[:, -1] == EOS_ID).all() and (short[:, 0] == BOS_ID).all()
    unseen = decode(first, encode(first, ["a red zebra"], 16))[0]
    assert unseen.startswith("a red")  # unseen characters become [UNK], dropped on decode
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CAPTIONS, vocab_size=8)


# -- shapes --------------------------------------------------------------------------------
def test_shapes_layout_and_spec(small_shapes) -> None:
    spec = small_shapes.spec
    assert (spec.task, spec.modality, spec.input_shape) == (
        "contrastive",
        "image-text",
        (3, 16, 16),
    )
    assert spec.label_names == SHAPES and spec.num_classes == len(SHAPES)
    images, tokens, labels = small_shapes.train
    assert images.shape == (64, 3, 16, 16) and images.dtype == torch.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert tokens.shape == (64, spec.text_length) and int(tokens.max()) < spec.vocab_size
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(len(SHAPES)))
    for split in (small_shapes.val, small_shapes.test):
        assert len(split) == 4 and len(split[0]) == len(split[1]) == len(split[2]) == 40
        assert split[3].shape == (len(SHAPES), spec.text_length)  # one prompt per class


def test_shapes_same_seed_same_data_other_seed_other_data() -> None:
    options = ShapesOptions(n_train=20, n_val=5, n_test=5, image_size=16)
    a, b, c = (Shapes().load(options, seed) for seed in (3, 3, 4))
    for name in ("train", "val", "test"):
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            assert torch.equal(x, y)
    assert not torch.equal(a.train[0], c.train[0])


def test_shapes_captions_match_attributes_and_pixels() -> None:
    images, captions, labels, attributes = generate(60, 32, 0.0, np.random.default_rng(1))
    for image, caption, label, attr in zip(images, captions, labels, attributes, strict=True):
        words = caption.replace(",", "").split()
        assert attr["shape"] in words and SHAPES[label] == attr["shape"]
        assert attr["color"] in words and attr["size"] in words
        assert POSITIONS[attr["position"]][1] in caption
        colored = image.sum(0) > 0
        assert colored.any()
        pixel = image[:, colored].mean(1)  # the shape's colour, with no noise
        assert pixel == pytest.approx(COLORS[attr["color"]], abs=1e-5)
        ys, xs = colored.nonzero()
        (fx, fy), _ = POSITIONS[attr["position"]]
        assert abs(xs.mean() / 32 - fx) < 0.12 and abs(ys.mean() / 32 - fy) < 0.12
        big = colored.sum() > 0.1 * 32 * 32
        assert big == (attr["size"] == "large")


def test_shapes_without_captions_is_classification_data() -> None:
    splits = Shapes().load(ShapesOptions(n_train=10, n_val=4, n_test=4, captions=False), 0)
    assert splits.spec.task == "classification" and splits.spec.label_names == SHAPES
    x, y = splits.val
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64


# -- model, loss and metrics ----------------------------------------------------------------
@pytest.mark.parametrize("tower", ["vit", "cnn"])
@pytest.mark.parametrize(("causal", "pooling"), [(True, "eos"), (False, "mean")])
def test_clip_model_shapes_and_normalized(small_shapes, tower, causal, pooling) -> None:
    torch.manual_seed(0)
    params = {"image_tower": tower, "image_width": 32, "image_depth": 1, "image_heads": 2}
    params |= {"text_causal": causal, "text_pooling": pooling, "text_width": 32, "text_depth": 1}
    model = CLIP().build(params | {"embed_dim": 24, "temperature_init": 0.001}, small_shapes.spec)
    assert isinstance(model, CLIPModel)
    shortest = token_lengths(small_shapes.train[1]).argsort()[:5]
    images, tokens, _ = (t[shortest] for t in small_shapes.train)
    image_emb, text_emb, scale = model(images, tokens)
    assert image_emb.shape == text_emb.shape == (5, 24)
    assert torch.allclose(image_emb.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(text_emb.norm(dim=1), torch.ones(5), atol=1e-5)
    assert scale.item() == pytest.approx(100.0)  # 1 / 0.001 clamped as in CLIP
    assert model.image_tower(images).shape == model.text_tower(tokens).shape == (5, 24)
    # padding does not change a caption's embedding: drop the columns no caption uses
    used = int(token_lengths(tokens).max())
    assert used < tokens.shape[1]
    assert torch.allclose(model.encode_text(tokens[:, :used]), model.encode_text(tokens), atol=1e-6)
    contrastive_loss(image_emb, text_emb, scale).backward()
    assert model.log_scale.grad is None or torch.isfinite(model.log_scale.grad)


def test_loss_and_recall_on_perfect_embeddings() -> None:
    emb = torch.eye(6)
    assert contrastive_loss(emb, emb, torch.tensor(100.0)) < 1e-6
    assert contrastive_loss(emb, emb.roll(1, 0), torch.tensor(100.0)) > 10
    matches = torch.eye(6, dtype=torch.bool)
    assert recall_at_k(emb, emb, matches, (1, 5)) == {1: 1.0, 5: 1.0}
    assert recall_at_k(emb, emb.roll(1, 0), matches, (1,))[1] == 0.0
    # duplicate captions share the target: identical rows are positives of each other
    tokens = torch.tensor([[2, 5, 3], [2, 5, 3], [2, 6, 3]])
    assert same_rows(tokens).tolist() == [
        [True, True, False],
        [True, True, False],
        [False, False, True],
    ]


def test_check_params_refuses_bad_params_and_classification_data() -> None:
    arch = CLIP()
    spec = DataSpec("contrastive", "image-text", (3, 16, 16), 5, vocab_size=50, text_length=8)
    assert arch.check_params({}, spec) is None
    assert "divisible" in arch.check_params({"text_width": 30, "text_heads": 4})
    assert "patch_size" in arch.check_params({"patch_size": 5}, spec)
    assert arch.check_params({"image_tower": "cnn", "patch_size": 5}, spec) is None
    assert "image_tower" in arch.check_params({"image_tower": "resnet"})
    digits = DataSpec("classification", "image", (1, 8, 8), 10)
    assert "contrastive" in arch.check_params({}, digits)
    with pytest.raises(ValueError, match="contrastive"):
        arch.build({}, digits)


# -- training ---------------------------------------------------------------------------------
@pytest.mark.slow  # trains for seconds
def test_clip_learns_shapes() -> None:
    splits = Shapes().load(
        ShapesOptions(n_train=1500, n_val=200, n_test=200, image_size=16, noise=0.0), seed=0
    )
    torch.manual_seed(0)
    model = CLIP().build(SMALL, splits.spec)
    device = torch.device("cpu")
    before = evaluate_contrastive(model, splits.val, device)
    reports: list[dict[str, float]] = []
    hp = {"epochs": 8, "lr": 3e-3, "batch_size": 64, "warmup_epochs": 1, "weight_decay": 0.05}
    final = CLIP().train(model, splits, hp, lambda epoch, m: reports.append(m), seed=0)
    assert len(reports) == 8 and final == reports[-1]
    assert {"val_recall_at_1", "val_recall_at_5", "val_zeroshot_accuracy", "val_loss"} <= set(final)
    assert {"test_recall_at_1", "test_zeroshot_accuracy", "test_loss"} <= set(final)
    assert not any(k.startswith("test_") for k in reports[0])

    assert final["val_loss"] < 0.5 * before["loss"]
    assert reports[-1]["train_loss"] < 0.5 * reports[0]["train_loss"]
    # chance of recall@1: the share of val items that match a query (duplicate captions)
    images, tokens, _, _ = splits.val
    chance = float((same_rows(tokens) | same_rows(images)).float().mean())
    assert final["val_recall_at_1"] >= 5 * chance, (final["val_recall_at_1"], chance)
    assert final["val_recall_at_5"] >= final["val_recall_at_1"]
    assert final["val_zeroshot_accuracy"] >= 1 / len(SHAPES) + 0.1
    assert final["val_accuracy"] == final["val_zeroshot_accuracy"]
    print(
        f"loss {before['loss']:.3f} -> {final['val_loss']:.3f}; recall@1 "
        f"{final['val_recall_at_1']:.3f} (chance {chance:.4f}); zero-shot "
        f"{final['val_zeroshot_accuracy']:.3f}"
    )


def test_nan_loss_fails_the_trial(small_shapes) -> None:
    model = CLIP().build(SMALL, small_shapes.spec)
    with torch.no_grad():
        model.log_scale.fill_(float("nan"))
    with pytest.raises(TrialFailed, match="NaN"):
        CLIP().train(model, small_shapes, {"epochs": 1, "batch_size": 32}, lambda *a: None, 0)


# -- config and search ----------------------------------------------------------------------
CLIP_CONFIG = """
[study]
name = "{name}"
trials = 2
seed = 0
metric = "val_recall_at_1"

[architecture]
name = "clip"

[dataset]
name = "{dataset}"
{data}

[space]
image_tower = ["cnn"]
image_depth = [2]
image_width = [8, 16]
text_depth = [1]
text_width = [16]
text_heads = [2]
embed_dim = [16]
batch_size = [64]
epochs = 1

[resources]
cpus_per_trial = 1
"""
TINY_SHAPES = "n_train = 128\nn_val = 32\nn_test = 32\nimage_size = 16"


def test_config_accepts_clip_on_shapes_and_refuses_digits(write_config) -> None:
    ok = write_config(CLIP_CONFIG.format(name="clip-ok", dataset="shapes", data=TINY_SHAPES))
    resolved = load_config(ok, get_registry())
    assert resolved.direction == "maximize" and resolved.architecture.name == "clip"
    bad = write_config(CLIP_CONFIG.format(name="clip-digits", dataset="digits", data=""))
    with pytest.raises(ConfigError, match=r"dataset 'digits' .*cannot feed architecture 'clip'"):
        load_config(bad, get_registry())


@pytest.mark.slow  # ~40 s: a `platform search` subprocess and two Ray trials
def test_search_trains_clip_through_ray(write_config, tmp_path, ray_address) -> None:
    path = write_config(CLIP_CONFIG.format(name="clip-search", dataset="shapes", data=TINY_SHAPES))
    url = f"sqlite:///{tmp_path}/clip.db"
    result = run_platform("search", str(path), "--storage", url, "--address", ray_address)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(run_platform("show", "clip-search", "--storage", url, "--json").stdout)
    assert [t["state"] for t in shown["trials"]] == ["complete"] * 2
    values = [t["value"] for t in shown["trials"]]
    # recall@1 over the 32 validation pairs (one epoch learns little: test_clip_learns_shapes
    # checks learning against chance)
    assert all(0 <= v <= 1 and (v * 32).is_integer() for v in values)
    assert shown["best"]["value"] == max(values)


def test_each_tower_exports_to_onnx(small_shapes) -> None:
    import io
    import warnings

    import onnxruntime

    torch.manual_seed(0)
    params = {"image_tower": "vit", "image_width": 32, "image_depth": 1, "image_heads": 2}
    model = CLIP().build(
        params | SMALL | {"image_tower": "vit", "text_causal": True}, small_shapes.spec
    )
    model.eval()
    for tower, x in (
        (model.image_tower, small_shapes.val[0][:4]),
        (model.text_tower, small_shapes.val[1][:4]),
    ):
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not gone
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tower, (x,), buffer, dynamo=False, input_names=["x"], output_names=["y"]
            )
        session = onnxruntime.InferenceSession(
            buffer.getvalue(), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(["y"], {"x": x.numpy()})
        with torch.no_grad():
            assert abs(got - tower(x).numpy()).max() <= 1e-4
