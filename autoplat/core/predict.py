"""`platform predict`'s runtime: onnxruntime sessions, the metadata an exported model
carries, reading inputs as the model's dataset made them, and the predictions.

Predict reads images, videos (``.npy`` or a folder of frames), audio files, text
(tokenized with the tokenizer stored in the model), ``.npy`` / ``.npz`` arrays and
CSV/Parquet tables of features. It needs numpy and onnxruntime, not torch or onnx;
autoplat.core.export writes the models it reads.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoplat.core.errors import AutoplatError

if TYPE_CHECKING:
    import onnxruntime as ort

BATCH_SIZE = 64
META = "autoplat."  # prefix of our keys in the model's metadata_props
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
TEXT_SUFFIXES = {".txt"}
OUTPUTS = {  # metadata "output": what a model gives (export writes it, predict reads it)
    "logits": "logits (softmax gives class probabilities)",
    "embedding": "embedding: one vector per example",
}


class PredictError(AutoplatError):
    """A model or an input file cannot be used for prediction."""


def image_preprocessing(shape: Sequence[int]) -> dict[str, Any]:
    """How predict turns an image file into an input shaped (..., C, H, W) (stored in the
    model by export; assumed for a plain ONNX model of such a shape)."""
    channels, rows, cols = shape[-3:]
    return {
        "modality": "image",
        "layout": "NCHW",
        "color": "grayscale" if channels == 1 else "rgb",
        "size": [rows, cols],
        "resize": "box",
        "scale": "pixel / 255, so values lie in [0, 1]",
    }


def with_border_mean(prep: dict[str, Any], examples: Any) -> dict[str, Any]:
    """``prep`` of an image or video part plus ``border_mean``: the mean border brightness
    of ``examples`` (its test inputs, in [0, 1]; about 0 for light-on-dark digits, 1 for
    dark ink on white), which predict compares each image with (``background_hint``)."""
    x = np.asarray(examples, dtype=np.float32)
    if (
        prep.get("modality") not in {"image", "video"}
        or x.ndim < 3
        or min(x.shape[-2:]) < 3
        or not len(x)
    ):
        return prep  # not images (e.g. a latent beside an image model): nothing to compare
    borders = border_brightness(x)
    return prep | {"border_mean": round(float(borders.mean()), 3)}


def border_brightness(x: np.ndarray) -> np.ndarray:
    """The mean of each example's outermost rows and columns (the last two axes): (N,)."""
    edges = [x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]]
    return np.concatenate([e.reshape(len(x), -1) for e in edges], axis=1).mean(axis=1)


def background_hint(names: Sequence[str], x: np.ndarray, info: ModelInfo, invert: bool) -> str:
    """A line for the person when image inputs have the opposite background of the images
    the model was trained on (light where those are dark, or the reverse); else "".

    Only models whose export recorded ``border_mean`` of clearly dark (< 0.25) or light
    (> 0.75) images are checked; an image counts as opposite when its border brightness
    lies more than 0.5 away. Predict does not flip images itself: a border can mislead
    (a framed or cropped picture), and results should not change silently.
    """
    trained = info.preprocessing.get("border_mean")
    if trained is None or info.modality not in {"image", "video"} or 0.25 <= trained <= 0.75:
        return ""
    images = [i for i, n in enumerate(names) if _is_image_input(Path(n))]
    if not images:
        return ""
    borders = border_brightness(x[images])
    odd = [i for i, b in zip(images, borders, strict=True) if abs(b - trained) > 0.5]
    if not odd:
        return ""
    dark = trained < 0.5
    seen = "light" if dark else "dark"
    example = names[odd[0]] + (f" and {len(odd) - 1} more" if len(odd) > 1 else "")
    fix = "drop --invert" if invert else "add --invert"
    return (
        f"hint: {'inverted by --invert, ' if invert else ''}{example} "
        f"{'has' if len(odd) == 1 else 'have'} a {seen} background (border "
        f"brightness {float(borders[images.index(odd[0])]):.2f}), but the model was trained "
        f"on {'light-on-dark' if dark else 'dark-on-light'} images (border {trained:.2f}); "
        f"if its predictions look wrong, {fix}"
    )


def _is_image_input(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or path.is_dir()


def default_providers() -> list[str]:
    """CUDA then CPU when onnxruntime has CUDA and this machine has a GPU; else CPU only."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and _gpu_present():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _gpu_present() -> bool:
    import torch

    return torch.cuda.is_available() or Path("/dev/nvidiactl").exists()


def open_session(
    model: str | Path | bytes, threads: int | None = None, providers: list[str] | None = None
) -> ort.InferenceSession:
    """An onnxruntime session (quiet below errors); ``threads`` sets intra-op threads.

    Raises:
        PredictError: The file is missing or not an ONNX model.
    """
    import onnxruntime as ort

    if not isinstance(model, bytes) and not Path(model).is_file():
        raise PredictError(f"no model file at {model}; create one with `platform export STUDY`")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=providers or default_providers())
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base but Exception
        raise PredictError(f"cannot load {model} as an ONNX model: {exc}") from None


def run_batches(
    session: ort.InferenceSession,
    x: np.ndarray | Sequence[np.ndarray],
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """The model's first output on ``x`` (one array per model input, or the only input's
    array), computed ``batch_size`` rows at a time."""
    arrays = [x] if isinstance(x, np.ndarray) else list(x)
    names = [i.name for i in session.get_inputs()]
    parts = [
        session.run(None, {n: a[i : i + batch_size] for n, a in zip(names, arrays, strict=True)})[0]
        for i in range(0, len(arrays[0]), batch_size)
    ]
    return np.concatenate(parts)


@dataclass
class ModelInfo:
    """What predict reads from a model: input shape, labels, preprocessing, and what the
    part takes and gives."""

    input_shape: tuple[int, ...]
    labels: list[str]
    preprocessing: dict[str, Any]
    metadata: dict[str, str]

    @property
    def modality(self) -> str:
        return str(self.preprocessing.get("modality", ""))

    @property
    def output(self) -> str:
        """ "logits", "embedding", or another kind of output (e.g. "noise")."""
        described = self.metadata.get("output", OUTPUTS["logits"])
        return next((k for k, v in OUTPUTS.items() if described.startswith(v)), described)

    @property
    def input_names(self) -> list[str]:
        return json.loads(self.metadata.get("input_names", "[]"))


def model_info(session: ort.InferenceSession) -> ModelInfo:
    """The autoplat metadata of a model; plain ONNX models fall back to their input shape.

    Raises:
        PredictError: The model has no static input shape and no autoplat metadata.
    """
    meta = {
        k.removeprefix(META): v
        for k, v in session.get_modelmeta().custom_metadata_map.items()
        if k.startswith(META)
    }
    if "input_shape" in meta:
        shape = tuple(json.loads(meta["input_shape"]))
    else:
        shape = tuple(session.get_inputs()[0].shape[1:])
        if not all(isinstance(d, int) for d in shape):
            raise PredictError(
                f"the model's input shape {shape} is not fixed and it has no autoplat "
                "metadata; export it with `platform export`"
            )
    classes = session.get_outputs()[0].shape[-1]
    default_labels = [str(i) for i in range(classes)] if isinstance(classes, int) else []
    labels = json.loads(meta["labels"]) if "labels" in meta else default_labels
    prep = json.loads(meta["preprocessing"]) if "preprocessing" in meta else {}
    if not prep and len(shape) == 3:
        prep = image_preprocessing(shape)
    return ModelInfo(shape, labels, prep, meta)


def tokenize(tokenizer_json: str, texts: Sequence[str]) -> np.ndarray:
    """Token ids (N, text_length) int64 of ``texts``, as the model's dataset made them."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise PredictError(
            "text models need the tokenizers package: pip install tokenizers"
        ) from None
    tokenizer = Tokenizer.from_str(tokenizer_json)
    return np.array([e.ids for e in tokenizer.encode_batch(list(texts))], dtype=np.int64)


def load_inputs(
    paths: Sequence[str | Path], info: ModelInfo, invert: bool = False
) -> tuple[list[str], np.ndarray | list[np.ndarray]]:
    """Read the inputs of a model as one batch, by what the model takes.

    - text parts: each input is a caption, or a ``.txt`` file of one caption per line;
      tokenized with the tokenizer stored in the model.
    - multi-input parts: ``.npz`` files holding one array per input name (a stack).
    - otherwise images, folders of video frames, audio files, ``.npy`` arrays and
      CSV/Parquet tables. Images are converted, resized and scaled as
      ``info.preprocessing`` says (``invert`` turns dark-on-light into light-on-dark);
      arrays and tables hold values already scaled like the dataset: one example shaped
      like the input, a stack of them, or one flattened example per row.

    Returns:
        A name per example (``path``, ``path[row]`` or the text) and the examples stacked
        (a list of arrays, one per input, for multi-input parts).

    Raises:
        PredictError: A file is missing, of an unknown type, or of the wrong shape.
    """
    if not paths:
        raise PredictError("no inputs given")
    if info.modality == "text":
        return _texts(paths, info)
    if len(info.input_names) > 1:
        return _npz_inputs(paths, info)
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for item in map(Path, paths):
        if info.modality == "video" and item.is_dir():
            names.append(str(item))
            arrays.append(_video_frames(item, info, invert)[None])
            continue
        if not item.is_file():
            raise PredictError(f"input {item} does not exist")
        suffix = item.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            batch = _image(item, info, invert)[None]
        elif suffix in AUDIO_SUFFIXES:
            batch = _audio(item, info)[None]
        elif suffix == ".npy":
            batch = _stack(np.load(item, allow_pickle=False), info.input_shape, item)
        elif suffix in TABLE_SUFFIXES:
            batch = _stack(_table(item), info.input_shape, item)
        else:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES | AUDIO_SUFFIXES | TABLE_SUFFIXES | {".npy"}))
            raise PredictError(f"input {item}: unknown file type '{suffix}'; use one of {kinds}")
        names += [str(item)] if len(batch) == 1 else [f"{item}[{i}]" for i in range(len(batch))]
        arrays.append(batch)
    x = np.concatenate(arrays).astype(np.float32)
    scaling = info.preprocessing.get("standardize")
    if scaling is not None:
        shape = (1, *info.input_shape)
        mean = np.asarray(scaling["mean"], dtype=np.float32).reshape(shape)
        x = (x - mean) / np.asarray(scaling["std"], dtype=np.float32).reshape(shape)
    return names, x


def _texts(items: Sequence[str | Path], info: ModelInfo) -> tuple[list[str], np.ndarray]:
    if "tokenizer" not in info.metadata:
        raise PredictError(
            "this text model carries no tokenizer (metadata key autoplat.tokenizer); export "
            "it again with `platform export`, or give token ids as .npy"
        )
    names: list[str] = []
    texts: list[str] = []
    for item in map(str, items):
        if Path(item).suffix.lower() in TEXT_SUFFIXES:
            path = Path(item)
            if not path.is_file():
                raise PredictError(f"input {path} does not exist (a .txt file of captions)")
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            names += [f"{path}[{i}]" for i in range(len(lines))]
            texts += lines
        else:
            names.append(item)
            texts.append(item)
    if not texts:
        raise PredictError("no text given: the .txt files are empty")
    return names, tokenize(info.metadata["tokenizer"], texts)


def _npz_inputs(paths: Sequence[str | Path], info: ModelInfo) -> tuple[list[str], list[np.ndarray]]:
    wanted = info.input_names
    names: list[str] = []
    columns: list[list[np.ndarray]] = [[] for _ in wanted]
    for path in map(Path, paths):
        if path.suffix.lower() != ".npz" or not path.is_file():
            raise PredictError(
                f"input {path}: this model takes {len(wanted)} inputs ({', '.join(wanted)}); "
                "give .npz files holding one array per input name (np.savez(f, "
                + ", ".join(f"{n}=..." for n in wanted)
                + "))"
            )
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in wanted if n not in data]
            if missing:
                raise PredictError(f"input {path} lacks the array(s) {', '.join(missing)}")
            arrays = [np.asarray(data[n]) for n in wanted]
        count = len(arrays[0])
        if any(len(a) != count for a in arrays):
            raise PredictError(f"input {path}: its arrays differ in length (the batch axis)")
        names += [f"{path}[{i}]" for i in range(count)]
        for column, array in zip(columns, arrays, strict=True):
            column.append(array)
    return names, [np.concatenate(c) for c in columns]


def _image(path: Path, info: ModelInfo, invert: bool, shape: Sequence[int] | None = None):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise PredictError("reading images needs Pillow: pip install pillow") from None
    if shape is None and info.modality != "image":
        raise PredictError(f"input {path}: this model does not take images")
    channels, rows, cols = shape or info.input_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (cols, rows):
                image = image.resize((cols, rows), Image.Resampling.BOX)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise PredictError(f"input {path}: cannot read the image ({exc})") from None
    if invert:
        pixels = 1.0 - pixels
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _natural_key(path: Path) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name.lower())]


def _video_frames(folder: Path, info: ModelInfo, invert: bool) -> np.ndarray:
    """A folder of frames as (frames, C, H, W): evenly spaced frames, as the video datasets
    resample their videos."""
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=_natural_key,
    )
    if not files:
        raise PredictError(f"input {folder}: the folder holds no frame images")
    frames = info.input_shape[0]
    pick = np.minimum(((np.arange(frames) + 0.5) * len(files) / frames).astype(int), len(files) - 1)
    return np.stack([_image(files[i], info, invert, info.input_shape[1:]) for i in pick])


def _audio(path: Path, info: ModelInfo) -> np.ndarray:
    """A sound file as the model's input: mono, the first samples (zero-padded)."""
    if info.modality != "audio":
        raise PredictError(f"input {path}: this model does not take audio")
    try:
        import soundfile as sf
    except ImportError:
        raise PredictError("reading audio needs soundfile: pip install soundfile") from None
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise PredictError(f"input {path}: cannot read the audio ({exc})") from None
    wanted = info.preprocessing.get("sample_rate")
    if wanted and int(rate) != int(wanted):
        raise PredictError(
            f"input {path} is sampled at {rate} Hz; the model takes {wanted} Hz: resample it "
            f"first (e.g. sox {path.name} -r {wanted} out.wav)"
        )
    size = math.prod(info.input_shape)
    mono = data.mean(axis=1)[:size]
    return np.pad(mono, (0, size - len(mono))).reshape(info.input_shape)


def _table(path: Path) -> np.ndarray:
    """The numeric columns of a CSV (a header row is skipped) or Parquet file."""
    if path.suffix.lower() != ".csv":
        try:
            import pandas as pd
        except ImportError:
            raise PredictError(f"input {path}: Parquet needs pandas: pip install pandas") from None
        return pd.read_parquet(path).select_dtypes("number").to_numpy(np.float32)
    rows = [row for row in csv.reader(path.read_text().splitlines()) if row]
    if rows and not all(_is_number(v) for v in rows[0]):
        rows = rows[1:]  # a header row
    numeric = [j for j in range(len(rows[0]) if rows else 0) if all(_is_number(r[j]) for r in rows)]
    return np.array([[float(r[j]) for j in numeric] for r in rows], dtype=np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _stack(array: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """``array`` as a stack (N, *shape): one example, a stack, rows of flat features, or
    either of the first two without the model's size-1 axes (e.g. (N, 8, 8) for a model
    taking (1, 8, 8): the channel axis is added)."""
    size = math.prod(shape)
    squeezed = tuple(d for d in shape if d != 1)
    if array.shape in (shape, squeezed):
        return array.reshape(1, *shape)
    if array.shape[1:] in (shape, squeezed):
        return array.reshape(-1, *shape)
    if array.ndim in (1, 2) and array.shape[-1] == size:
        return array.reshape(-1, *shape)
    dims = ", ".join(map(str, shape))
    hint = ""
    if len(shape) == 3 and array.shape[-3:] == (*shape[1:], shape[0]):
        hint = f" (it looks channels-last: np.moveaxis(a, -1, -3) gives (..., {dims}))"
    elif len(shape) == 3 and array.shape[-2:] == shape[1:]:
        hint = f" (it lacks the model's {shape[0]} channels)"
    raise PredictError(
        f"input {path} has shape {array.shape}; the model takes {shape}{hint}: give one "
        f"example shaped {shape}, a stack (N, {dims}), or {size} features a row"
        + (f"; {squeezed} examples without the size-1 axes work too" if squeezed != shape else "")
    )


def predict(
    session: ort.InferenceSession, x: np.ndarray, labels: Sequence[str], batch_size: int
) -> list[tuple[str, int, float]]:
    """Label, class index and probability of the top class of each example."""
    logits = run_batches(session, x, batch_size).astype(np.float64)
    probs = _softmax(logits)
    top = probs.argmax(axis=1)
    return [(labels[i], int(i), float(p[i])) for i, p in zip(top, probs, strict=True)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def sibling_part(model: str | Path, info: ModelInfo, part: str) -> Path:
    """The file of another part of the same export (e.g. the text tower beside the image
    tower), as the export named it.

    Raises:
        PredictError: The model has no such part, or its file is not beside ``model``.
    """
    parts: Mapping[str, str] = json.loads(info.metadata.get("parts", "{}"))
    if part not in parts:
        have = ", ".join(parts) or "none"
        raise PredictError(
            f"{model} was exported without a '{part}' part (parts: {have}); --texts needs "
            "a model whose export has a text tower (clip, video-text)"
        )
    if info.metadata.get("part") == part:
        raise PredictError(f"{model} is the {part} part itself; give --texts to another part")
    path = Path(model).with_name(parts[part])
    if not path.is_file():
        raise PredictError(
            f"the {part} part of {model} is not beside it: expected {path} (export writes the "
            "parts together; keep them in one folder)"
        )
    return path


def rank_texts(
    model: str | Path, info: ModelInfo, embeddings: np.ndarray, texts: Sequence[str], batch: int
) -> np.ndarray:
    """Zero-shot probabilities (N, len(texts)): softmax over the texts of the trained
    logit scale times the cosine similarity of each example's embedding to each text's."""
    if not texts:
        raise PredictError("--texts needs at least one text")
    text_path = sibling_part(model, info, "text")
    session = open_session(text_path)
    text_info = model_info(session)
    text_emb = run_batches(session, _texts(texts, text_info)[1], batch)
    scale = float(info.metadata.get("logit_scale", "1"))
    return _softmax(scale * _unit(embeddings) @ _unit(text_emb).T)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
