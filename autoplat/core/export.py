"""ONNX export of a trial's model (with metadata and a parity check) and onnxruntime
inference on images, arrays and tables of features."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoplat.core.errors import AutoplatError
from autoplat.core.interfaces import DataSpec
from autoplat.core.store import Store, Study, Trial, TrialState

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

OPSET = 17
TOLERANCE = 1e-4
"""Largest absolute difference between onnxruntime and torch logits that export accepts."""
BATCH_SIZE = 64
INPUT, OUTPUT = "input", "logits"
META = "autoplat."  # prefix of our keys in the model's metadata_props
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}


class ExportError(AutoplatError):
    """A trial cannot be exported, or its export does not match the torch model."""


class PredictError(AutoplatError):
    """A model or an input file cannot be used for prediction."""


@dataclass
class TrialModel:
    """A trial's rebuilt model with its checkpoint loaded, and what export needs."""

    study: Study
    trial: Trial
    architecture: str
    dataset: str
    model: torch.nn.Module
    spec: DataSpec
    test_inputs: torch.Tensor
    checkpoint: Path
    metrics: dict[str, float]


@dataclass
class Exported:
    """Where the model went and how closely onnxruntime matched torch."""

    path: Path
    max_abs_diff: float
    parity_inputs: int
    metadata: dict[str, str]


def _pick_trial(store: Store, study: Study, number: int | None) -> Trial:
    trials = store.trials(study.id)
    best = store.best_trial(study)
    if number is None:
        if best is None:
            raise ExportError(
                f"study '{study.name}' has no completed trial yet; export after a trial "
                "completes, or pick one with --trial N"
            )
        return best
    trial = next((t for t in trials if t.number == number), None)
    if trial is None:
        numbers = f"0..{trials[-1].number}" if trials else "none"
        raise ExportError(f"study '{study.name}' has no trial {number} (trials: {numbers})")
    if trial.state != TrialState.COMPLETE:
        why = f": {trial.error}" if trial.error else ""
        hint = f"; the best trial is {best.number}" if best else ""
        raise ExportError(
            f"trial {number} of study '{study.name}' is {trial.state.value}{why}. Only "
            f"completed trials have weights to export{hint}"
        )
    return trial


def _checkpoint(store: Store, study: Study, trial: Trial) -> Path:
    from autoplat.core.study import CHECKPOINT

    artifacts = store.artifacts(study.id, kind=CHECKPOINT)
    mine = [a for a in artifacts if a.trial_id == trial.id]
    if not mine:
        numbers = {t.id: t.number for t in store.trials(study.id)}
        kept = sorted(numbers[a.trial_id] for a in artifacts if a.trial_id in numbers)
        raise ExportError(
            f"trial {trial.number} of study '{study.name}' has no checkpoint (trials with "
            f"one: {', '.join(map(str, kept)) or 'none'}). By default a study keeps only its "
            "best trial's weights; set [study] checkpoints = \"all\" to keep every trial's"
        )
    path = Path(mine[-1].path)
    if not path.is_file():
        raise ExportError(
            f"the checkpoint of trial {trial.number} of study '{study.name}' is missing: "
            f"{path} (moved or deleted?)"
        )
    return path


def load_trial_model(store: Store, study_name: str, number: int | None = None) -> TrialModel:
    """Rebuild a completed trial's model from the store and load its checkpoint.

    Args:
        store: The results store holding the study.
        study_name: The study.
        number: The trial number; None picks the study's best trial.

    Raises:
        StoreError: No such study.
        ExportError: No such trial, the trial did not complete, or it has no checkpoint.
    """
    from autoplat.core.registry import get_registry
    from autoplat.core.training import load_checkpoint

    study = store.get_study(study_name)
    trial = _pick_trial(store, study, number)
    path = _checkpoint(store, study, trial)
    raw = json.loads(study.config)
    try:
        arch_name = raw["architecture"]["name"]
        dataset_options = dict(raw["dataset"])
        dataset_name = dataset_options.pop("name")
    except (KeyError, TypeError):
        raise ExportError(
            f"study '{study.name}' stores no architecture and dataset in its config; only "
            "search studies can be exported"
        ) from None
    registry = get_registry()
    arch = registry.get("architectures", arch_name)
    dataset = registry.get("datasets", dataset_name)
    options = dataset.Options.model_validate(dataset_options)
    splits = dataset.load(options, int(raw.get("study", {}).get("seed", 0)))
    params, _ = arch.split_params(trial.params_dict)
    model = arch.build(params, splits.spec)
    try:
        model.load_state_dict(load_checkpoint(path))
    except RuntimeError as exc:
        raise ExportError(
            f"the checkpoint {path} does not fit trial {trial.number}'s model: {exc}"
        ) from None
    return TrialModel(
        study=study,
        trial=trial,
        architecture=arch_name,
        dataset=dataset_name,
        model=model.eval(),
        spec=splits.spec,
        test_inputs=splits.test[0],
        checkpoint=path,
        metrics=store.final_metrics(trial.id),
    )


def preprocessing(spec: DataSpec) -> dict[str, Any]:
    """How raw inputs become model inputs, as stored in the model and used by predict."""
    if spec.modality != "image":
        prep: dict[str, Any] = {
            "modality": spec.modality,
            "input": "float32 arrays shaped like input_shape",
        }
        if spec.input_scaling is not None:
            mean, std = spec.input_scaling
            prep |= {"standardize": {"mean": list(mean), "std": list(std)}}
            prep["input"] = "raw feature values; predict standardizes them: (x - mean) / std"
        return prep
    channels, rows, cols = spec.input_shape
    return {
        "modality": "image",
        "layout": "NCHW",
        "color": "grayscale" if channels == 1 else "rgb",
        "size": [rows, cols],
        "resize": "box",
        "scale": "pixel / 255, so values lie in [0, 1]",
    }


def to_onnx(model: torch.nn.Module, example: torch.Tensor, opset: int = OPSET) -> bytes:
    """Export ``model`` with a dynamic batch axis (TorchScript exporter).

    Raises:
        ExportError: An op of the model has no ONNX form at this opset.
    """
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (the dynamo one needs onnxscript)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
        except torch.onnx.errors.UnsupportedOperatorError as exc:
            raise ExportError(f"cannot export to ONNX opset {opset}: {exc}") from None
    return buffer.getvalue()


def max_abs_diff(
    session: ort.InferenceSession, model: torch.nn.Module, inputs: torch.Tensor
) -> float:
    """Largest absolute difference of onnxruntime's outputs (run in batches) from torch's."""
    import torch

    with torch.inference_mode():
        expected = model(inputs).float().numpy()
    got = run_batches(session, inputs.numpy())
    return float(np.abs(got - expected).max())


def export_trial(
    tm: TrialModel, out: Path, tolerance: float = TOLERANCE, opset: int = OPSET
) -> Exported:
    """Export a trial's model to ``out`` with metadata, after checking parity on its test split.

    Raises:
        ExportError: The export failed, or onnxruntime's outputs on the test inputs differ
            from torch's by more than ``tolerance`` (then nothing is written).
    """
    import onnx

    data = to_onnx(tm.model, tm.test_inputs[:1], opset)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    diff = max_abs_diff(
        open_session(data, providers=["CPUExecutionProvider"]), tm.model, tm.test_inputs
    )
    if not diff <= tolerance:  # also refuses NaN
        raise ExportError(
            f"parity check failed: onnxruntime's outputs differ from torch's by up to {diff:.3g} "
            f"on {len(tm.test_inputs)} test inputs (tolerance {tolerance:g}); nothing written"
        )
    study, trial = tm.study, tm.trial
    metadata = {
        "study": study.name,
        "trial": str(trial.number),
        "architecture": tm.architecture,
        "dataset": tm.dataset,
        "params": json.dumps(trial.params_dict, sort_keys=True),
        "metric": study.metric,
        "value": repr(trial.value),
        "direction": study.direction,
        "metrics": json.dumps(tm.metrics, sort_keys=True),
        "input_shape": json.dumps(list(tm.spec.input_shape)),
        "preprocessing": json.dumps(preprocessing(tm.spec)),
        "labels": json.dumps(
            list(tm.spec.label_names) or [str(i) for i in range(tm.spec.num_classes)]
        ),
        "output": "logits (softmax gives class probabilities)",
        "parity_max_abs_diff": f"{diff:.3g}",
    }
    onnx.helper.set_model_props(proto, {META + k: v for k, v in metadata.items()})
    proto.doc_string = f"autoplat: study '{study.name}', trial {trial.number} ({tm.architecture})"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return Exported(out, diff, len(tm.test_inputs), metadata)


# -- inference -------------------------------------------------------------------------


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
    session: ort.InferenceSession, x: np.ndarray, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """The model's first output on ``x``, computed ``batch_size`` rows at a time."""
    name = session.get_inputs()[0].name
    parts = [
        session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


@dataclass
class ModelInfo:
    """What predict reads from a model: input shape, labels, preprocessing."""

    input_shape: tuple[int, ...]
    labels: list[str]
    preprocessing: dict[str, Any]
    metadata: dict[str, str]


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
    labels = json.loads(meta["labels"]) if "labels" in meta else [str(i) for i in range(classes)]
    prep = json.loads(meta["preprocessing"]) if "preprocessing" in meta else {}
    if not prep and len(shape) == 3:
        prep = preprocessing(DataSpec("classification", "image", shape))
    return ModelInfo(shape, labels, prep, meta)


def load_inputs(
    paths: Sequence[str | Path], info: ModelInfo, invert: bool = False
) -> tuple[list[str], np.ndarray]:
    """Read images, ``.npy`` arrays and CSV/Parquet tables as one float32 batch.

    Images are converted, resized and scaled as ``info.preprocessing`` says (``invert``
    turns dark-on-light into light-on-dark); arrays and tables must hold values already
    scaled like the dataset: one example shaped like the input, a stack of them, or one
    flattened example per row.

    Returns:
        A name per example (``path`` or ``path[row]``) and the examples stacked.

    Raises:
        PredictError: A file is missing, of an unknown type, or of the wrong shape.
    """
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for item in map(Path, paths):
        if not item.is_file():
            raise PredictError(f"input {item} does not exist")
        suffix = item.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            batch = _image(item, info, invert)[None]
        elif suffix == ".npy":
            batch = _stack(np.load(item, allow_pickle=False), info.input_shape, item)
        elif suffix in TABLE_SUFFIXES:
            batch = _stack(_table(item), info.input_shape, item)
        else:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES | TABLE_SUFFIXES | {".npy"}))
            raise PredictError(f"input {item}: unknown file type '{suffix}'; use one of {kinds}")
        names += [str(item)] if len(batch) == 1 else [f"{item}[{i}]" for i in range(len(batch))]
        arrays.append(batch)
    if not arrays:
        raise PredictError("no inputs given")
    x = np.concatenate(arrays).astype(np.float32)
    scaling = info.preprocessing.get("standardize")
    if scaling is not None:
        shape = (1, *info.input_shape)
        mean = np.asarray(scaling["mean"], dtype=np.float32).reshape(shape)
        x = (x - mean) / np.asarray(scaling["std"], dtype=np.float32).reshape(shape)
    return names, x


def _image(path: Path, info: ModelInfo, invert: bool) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise PredictError("reading images needs Pillow: pip install pillow") from None
    if info.preprocessing.get("modality") != "image":
        raise PredictError(f"input {path}: this model does not take images")
    channels, rows, cols = info.input_shape
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
    size = math.prod(shape)
    if array.shape == shape:
        return array[None]
    if array.shape[1:] == shape:
        return array
    if array.ndim in (1, 2) and array.shape[-1] == size:
        return array.reshape(-1, *shape)
    raise PredictError(
        f"input {path} has shape {array.shape}; the model takes {shape}: give one example "
        f"shaped {shape}, a stack (N, {', '.join(map(str, shape))}), or {size} features a row"
    )


def predict(
    session: ort.InferenceSession, x: np.ndarray, labels: Sequence[str], batch_size: int
) -> list[tuple[str, int, float]]:
    """Label, class index and probability of the top class of each example."""
    logits = run_batches(session, x, batch_size).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    top = probs.argmax(axis=1)
    return [(labels[i], int(i), float(p[i])) for i, p in zip(top, probs, strict=True)]
