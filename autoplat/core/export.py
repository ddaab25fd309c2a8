"""ONNX export of a trial's model and onnxruntime inference.

Export writes one ONNX file per part of the model (``Architecture.onnx_parts``: the
whole classifier, or each tower of a multimodal model), each with metadata and checked
against torch on the test split. Predict reads images, videos (``.npy`` or a folder of
frames), audio files, text (tokenized with the tokenizer stored in the model), ``.npy``
/ ``.npz`` arrays and CSV/Parquet tables of features.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import secrets
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoplat.core.errors import AutoplatError
from autoplat.core.interfaces import DataSpec, OnnxPart
from autoplat.core.space import split_dataset_params
from autoplat.core.store import Store, Study, Trial, TrialState

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

OPSET = 17
TOLERANCE = 1e-4
"""Largest absolute difference between onnxruntime and torch outputs that export accepts."""
BATCH_SIZE = 64
INPUT, OUTPUT = "input", "logits"
META = "autoplat."  # prefix of our keys in the model's metadata_props
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
TEXT_SUFFIXES = {".txt"}
OUTPUTS = {
    "logits": "logits (softmax gives class probabilities)",
    "embedding": "embedding: one vector per example",
}


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
    test: tuple[torch.Tensor, ...]  # the whole test split; test[0] are the inputs
    checkpoint: Path
    metrics: dict[str, float]
    parts: dict[str, OnnxPart] = field(default_factory=dict)  # empty: the whole model
    tokenizer: str | None = None  # tokenizers JSON for text parts (padding built in)


@dataclass
class Exported:
    """Where one part went and how closely onnxruntime matched torch."""

    path: Path
    max_abs_diff: float
    parity_inputs: int
    metadata: dict[str, str]
    part: str = "model"


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


def _check_has_models(study: Study, raw: dict[str, Any]) -> None:
    """Refuse studies whose trials never train a model to keep."""
    if study.kind != "search":
        what = {"al": "an active-learning study", "curate": "a curation run"}
        raise ExportError(
            f"study '{study.name}' is {what.get(study.kind, f'a {study.kind} study')}: it keeps "
            "no model weights, so there is nothing to export. Export a search study "
            "(`platform runs` lists studies with their kind)"
        )
    if isinstance(raw.get("benchmark"), dict):
        name = raw["benchmark"].get("name", "?")
        raise ExportError(
            f"study '{study.name}' is a tabular-benchmark study ([benchmark] name = "
            f'"{name}"): its trials look their results up in a table and train no model, so '
            "there are no weights to export. To get a model, search with [architecture] and "
            "[dataset] instead (e.g. examples/nas_digits.toml trains NAS-Bench-201 cells on "
            "digits; fix the cell you like in [space]) and export that study"
        )
    if not isinstance(raw.get("architecture"), dict) or not isinstance(raw.get("dataset"), dict):
        raise ExportError(
            f"study '{study.name}' stores no [architecture] and [dataset] in its config; only "
            "search studies that train a model can be exported"
        )


def _checkpoint(store: Store, study: Study, trial: Trial, retention: str) -> Path:
    from autoplat.core.study import CHECKPOINT

    artifacts = store.artifacts(study.id, kind=CHECKPOINT)
    mine = [a for a in artifacts if a.trial_id == trial.id]
    if not mine:
        numbers = {t.id: t.number for t in store.trials(study.id)}
        kept = sorted(numbers[a.trial_id] for a in artifacts if a.trial_id in numbers)
        where = f"trial {trial.number} of study '{study.name}' has no checkpoint"
        if retention == "none":
            raise ExportError(
                f'{where}: the study ran with [study] checkpoints = "none", so no trial kept '
                'its weights. Run the search again with checkpoints = "best" (the default) '
                'or "all" to get weights to export'
            )
        if kept:
            raise ExportError(
                f"{where} (trials with one: {', '.join(map(str, kept))}). By default a study "
                'keeps only its best trial\'s weights; set [study] checkpoints = "all" to keep '
                "every trial's"
            )
        raise ExportError(
            f"{where}, and no trial of it has one: its weights were never recorded (the "
            "study predates checkpoints, or the workers wrote them where the driver could "
            "not see them: on a multi-node cluster set [study] checkpoint_dir to storage "
            "every node mounts). Run the search again to get weights to export"
        )
    path = Path(mine[-1].path)
    if not path.is_file():
        raise ExportError(
            f"the checkpoint of trial {trial.number} of study '{study.name}' is missing: "
            f"{path} (moved or deleted?)"
        )
    return path


def find_trial(store: Store, study_name: str, number: int | None = None) -> tuple[Study, Trial]:
    """The study and its trial ``number`` (None: the best) that export would load.

    Raises:
        StoreError: No such study.
        ExportError: The study trains no models, no such trial, or it did not complete.
    """
    study = store.get_study(study_name)
    _check_has_models(study, json.loads(study.config or "{}"))
    return study, _pick_trial(store, study, number)


def load_trial_model(store: Store, study_name: str, number: int | None = None) -> TrialModel:
    """Rebuild a completed trial's model from the store, load its checkpoint, and find
    its ONNX parts (and, for text parts, the tokenizer the dataset trains at load).

    Args:
        store: The results store holding the study.
        study_name: The study.
        number: The trial number; None picks the study's best trial.

    Raises:
        StoreError: No such study.
        ExportError: The study trains no models, no such trial, the trial did not
            complete, it has no checkpoint, or the rebuilt tokenizer does not reproduce
            the dataset's token ids.
    """
    from autoplat.core.registry import get_registry
    from autoplat.core.training import load_checkpoint

    study, trial = find_trial(store, study_name, number)
    raw = json.loads(study.config or "{}")
    retention = str(raw.get("study", {}).get("checkpoints", "best"))
    path = _checkpoint(store, study, trial, retention)
    arch_name = raw["architecture"]["name"]
    dataset_options = dict(raw["dataset"])
    dataset_name = dataset_options.pop("name")
    registry = get_registry()
    arch = registry.get("architectures", arch_name)
    dataset = registry.get("datasets", dataset_name)
    data_options, trial_params = split_dataset_params(trial.params_dict)
    options = dataset.Options.model_validate({**dataset_options, **data_options})
    splits = dataset.load(options, int(raw.get("study", {}).get("seed", 0)))
    params, _ = arch.split_params(trial_params)
    model = arch.build(params, splits.spec)
    try:
        model.load_state_dict(load_checkpoint(path))
    except RuntimeError as exc:
        raise ExportError(
            f"the checkpoint {path} does not fit trial {trial.number}'s model: {exc}"
        ) from None
    model.eval()
    parts = arch.onnx_parts(model, splits)
    text = [(name, p) for name, p in parts.items() if p.modality == "text"]
    tokenizer = None
    if text:
        tokenizer = shippable_tokenizer(splits.spec.tokenizer, text[0][1].inputs[0], dataset_name)
    return TrialModel(
        study=study,
        trial=trial,
        architecture=arch_name,
        dataset=dataset_name,
        model=model,
        spec=splits.spec,
        test=splits.test,
        checkpoint=path,
        metrics=store.final_metrics(trial.id),
        parts=parts,
        tokenizer=tokenizer,
    )


def shippable_tokenizer(spec_tokenizer: str, tokens: torch.Tensor, dataset: str) -> str:
    """The JSON of the dataset's tokenizer (``DataSpec.tokenizer``) with padding to the
    token rows' length and truncation built in, so ``Tokenizer.from_str(json)
    .encode_batch(texts)`` gives exactly the dataset's token ids ``tokens`` (N, length).

    Checked by decoding the token rows (those without an unknown token, and not cut to
    the length when any row is shorter) and encoding them again.

    Raises:
        ExportError: The dataset gives no tokenizer, or it does not reproduce its token ids.
    """
    from tokenizers import Tokenizer

    if not spec_tokenizer:
        raise ExportError(
            f"dataset '{dataset}' gives token ids but no tokenizer, so predict could not "
            "tokenize text as training did; a dataset that tokenizes text must put its "
            "tokenizer's JSON in DataSpec.tokenizer"
        )
    length = int(tokens.shape[1])
    rows = tokens.tolist()
    tokenizer = Tokenizer.from_str(spec_tokenizer)
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token=tokenizer.id_to_token(0))
    unk = tokenizer.token_to_id(getattr(tokenizer.model, "unk_token", None) or "[UNK]")
    known = [row for row in rows if unk is None or unk not in row]
    # a row without padding may be a caption cut mid-word, which no text encodes to
    known = [row for row in known if row[-1] == 0] or known
    texts = tokenizer.decode_batch(known, skip_special_tokens=True)
    if [e.ids for e in tokenizer.encode_batch(texts)] != known:
        raise ExportError(
            f"dataset '{dataset}': its tokenizer does not reproduce its own token ids, so "
            "predict could not tokenize text as training did; nothing written"
        )
    return tokenizer.to_str()


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
    return _image_preprocessing(spec.input_shape)


def _image_preprocessing(shape: Sequence[int]) -> dict[str, Any]:
    channels, rows, cols = shape[-3:]
    return {
        "modality": "image",
        "layout": "NCHW",
        "color": "grayscale" if channels == 1 else "rgb",
        "size": [rows, cols],
        "resize": "box",
        "scale": "pixel / 255, so values lie in [0, 1]",
    }


def part_preprocessing(part: OnnxPart, spec: DataSpec) -> dict[str, Any]:
    """The preprocessing stored with a part: by its modality, plus its own keys."""
    shape = tuple(part.inputs[0].shape[1:])
    modality = part.modality or spec.modality
    if not part.modality:
        prep = preprocessing(spec)
    elif modality == "image" and len(shape) == 3:
        prep = _image_preprocessing(shape)
    elif modality == "video" and len(shape) == 4:
        prep = _image_preprocessing(shape) | {
            "modality": "video",
            "layout": "NTCHW",
            "frames": shape[0],
            "input": "a folder of frame images (natural name order, resampled to `frames` "
            "evenly spaced ones) or a .npy array (frames, C, H, W) scaled to [0, 1]",
        }
    elif modality == "text":
        prep = {
            "modality": "text",
            "text_length": shape[-1],
            "input": "int64 token ids; the tokenizer in metadata key autoplat.tokenizer "
            "(tokenizers JSON, padding and truncation set) turns text into them",
        }
    else:
        prep = {"modality": modality, "input": "float32 arrays shaped like input_shape"}
    return prep | part.preprocessing


@contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Silence file descriptors 1 and 2 (the exporter's C++ side prints whole graphs)."""
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _exporter_reason(exc: Exception) -> str:
    """The first line of an exporter error, without the graph dump that follows it."""
    text = str(exc).strip().split("\n")[0]
    return re.split(r"\s+\[Caused by", text)[0].strip() or type(exc).__name__


def to_onnx(
    model: torch.nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    opset: int = OPSET,
    *,
    input_names: Sequence[str] = (INPUT,),
    output_name: str = OUTPUT,
) -> bytes:
    """Export ``model`` (TorchScript exporter) with a dynamic batch axis on every input and
    on the output.

    Raises:
        ExportError: An op of the model has no ONNX form at this opset, or tracing failed;
            the message says which op (as the exporter names it) and why.
    """
    import torch

    examples = example if isinstance(example, tuple) else (example,)
    axes = {name: {0: "batch"} for name in (*input_names, output_name)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (the dynamo one needs onnxscript)
        warnings.simplefilter("ignore")
        try:
            with _quiet_native_output():
                torch.onnx.export(
                    model,
                    examples,
                    buffer,
                    dynamo=False,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=[output_name],
                    dynamic_axes=axes,
                )
        except RuntimeError as exc:  # the exporter's errors (OnnxExporterError) and tracing's
            raise ExportError(
                f"cannot export to ONNX opset {opset}: {_exporter_reason(exc)}. The model "
                "uses an op (or a form of it) the exporter cannot write at this opset; see "
                "docs/export.md, 'What exports', for the known cases and workarounds"
            ) from None
    return buffer.getvalue()


def max_abs_diff(
    session: ort.InferenceSession,
    model: torch.nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
) -> float:
    """Largest absolute difference of onnxruntime's outputs from torch's, both in batches."""
    return _parity(session, model, inputs if isinstance(inputs, tuple) else (inputs,))[0]


def _parity(
    session: ort.InferenceSession, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]
) -> tuple[float, np.ndarray]:
    """The largest |onnxruntime - torch| over ``inputs`` and torch's outputs."""
    import torch

    with torch.inference_mode():
        expected = np.concatenate(
            [
                model(*(x[i : i + BATCH_SIZE] for x in inputs)).float().numpy()
                for i in range(0, len(inputs[0]), BATCH_SIZE)
            ]
        )
    got = run_batches(session, [x.numpy() for x in inputs])
    return float(np.abs(got - expected).max()), expected


def part_paths(out: Path, names: Sequence[str]) -> dict[str, Path]:
    """Where each part goes: ``out`` for a single part, else ``out.<part>.onnx`` beside it."""
    if len(names) == 1:
        return {names[0]: out}
    suffix = out.suffix or ".onnx"
    stem = out.name.removesuffix(out.suffix) if out.suffix else out.name
    return {name: out.with_name(f"{stem}.{name}{suffix}") for name in names}


STORE_FILES = {
    "": "database",
    "-wal": "write-ahead log",
    "-shm": "shared-memory file",
    "-journal": "rollback journal",
}


def protected_files(store: Store) -> dict[Path, str]:
    """The files export never writes, even with --force, each with what it is: a SQLite
    store's database and its -wal/-shm/-journal files, and every file the store records
    (checkpoints and other artifacts of every study)."""
    from sqlalchemy.engine import make_url

    files: dict[Path, str] = {}
    url = make_url(store.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        db = Path(url.database).expanduser()
        for suffix, what in STORE_FILES.items():
            files[db.with_name(db.name + suffix)] = f"the results store's {what}"
    for study in store.studies():
        for artifact in store.artifacts(study.id):
            where = f"a {artifact.kind} file of study '{study.name}' recorded in the store"
            files.setdefault(Path(artifact.path), where)
    return files


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode when both exist (hard and
    symbolic links included), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_out(path: Path, protected: Mapping[Path, str], force: bool) -> None:
    """Refuse an output path that export must not write: a folder, one in a folder that
    does not exist or is not writable, a protected file (``protected_files``; even with
    ``force``), or an existing file unless ``force``.

    Raises:
        ExportError: The path is refused; the message says why and what to do.
    """
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give --out a file name, e.g. {path / 'model.onnx'}")
    folder = path.parent
    if not folder.is_dir():
        raise ExportError(
            f"the folder of --out {path} does not exist ({folder}); create it first, or "
            "choose another --out"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write to the folder {folder}; choose another --out")
    what = next((w for p, w in protected.items() if _same_file(path, p)), None)
    if what is not None:
        raise ExportError(
            f"{path} is {what}; export never overwrites it, even with --force: choose another --out"
        )
    if not force and (path.exists() or path.is_symlink()):
        raise ExportError(_exists(path))


def _exists(path: Path) -> str:
    return f"{path} exists; pass --force to overwrite it, or choose another --out"


def _stage(data: bytes, path: Path) -> Path:
    """Write ``data`` to a new temporary file beside ``path``, fsynced; return its name."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _publish(tmp: Path, path: Path, force: bool) -> None:
    """Give the finished ``tmp`` its final name; an existing file is replaced only with
    ``force`` (without it, a hard link refuses even a file that appeared meanwhile)."""
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ExportError(_exists(path)) from None
    except OSError:  # a filesystem without hard links
        if path.exists() or path.is_symlink():
            raise ExportError(_exists(path)) from None
        os.replace(tmp, path)


def write_files(files: Sequence[tuple[Path, bytes]], force: bool = False) -> None:
    """Write each (path, data): all to temporary names first, then each renamed to its
    path, so a crash or an error never leaves a half-written file under a final name."""
    from autoplat.core.training import sync_folder

    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            staged.append((_stage(data, path), path))
        for tmp, path in staged:
            _publish(tmp, path, force)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for folder in {path.parent for path, _ in files}:
        sync_folder(folder)


def export_trial(
    tm: TrialModel,
    out: Path,
    tolerance: float = TOLERANCE,
    opset: int = OPSET,
    *,
    force: bool = False,
    protected: Mapping[Path, str] | None = None,
) -> list[Exported]:
    """Export each part of a trial's model with metadata, after checking its parity on the
    test split; one part writes ``out``, several write ``out.<part>.onnx``.

    Every path is checked first (``check_out``: existing files only with ``force``, never
    a ``protected`` one), and the files are written only once every part passed its
    parity check, each to a temporary name then renamed.

    Raises:
        ExportError: A path is refused, a part failed to export (the message names the
            part and the op), or onnxruntime's outputs on the test inputs differ from
            torch's by more than ``tolerance``. Then no file is written.
    """
    import onnx

    parts = tm.parts or {"model": OnnxPart(tm.model, (tm.test[0],))}
    paths = part_paths(out, list(parts))
    for path in paths.values():
        check_out(path, protected or {}, force)
    study, trial = tm.study, tm.trial
    common = {
        "study": study.name,
        "trial": str(trial.number),
        "architecture": tm.architecture,
        "dataset": tm.dataset,
        "params": json.dumps(trial.params_dict, sort_keys=True),
        "metric": study.metric,
        "value": repr(trial.value),
        "direction": study.direction,
        "metrics": json.dumps(tm.metrics, sort_keys=True),
    }
    if len(parts) > 1:
        common["parts"] = json.dumps({name: path.name for name, path in paths.items()})
    staged: list[tuple[Exported, onnx.ModelProto]] = []
    for name, part in parts.items():
        where = f"part '{name}' of {tm.architecture}: " if len(parts) > 1 else ""
        part.module.eval()
        output = OUTPUT if part.output == "logits" else part.output
        names = {}  # the defaults keep the call of single-input classifiers as it always was
        if tuple(part.input_names) != (INPUT,) or output != OUTPUT:
            names = {"input_names": tuple(part.input_names), "output_name": output}
        example = tuple(x[:1] for x in part.inputs)
        try:
            data = to_onnx(part.module, example if len(example) > 1 else example[0], opset, **names)
        except ExportError as exc:
            raise ExportError(f"{where}{exc}; nothing written") from None
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
        session = open_session(data, providers=["CPUExecutionProvider"])
        diff, expected = _parity(session, part.module, tuple(part.inputs))
        count = len(part.inputs[0])
        if not diff <= tolerance:  # also refuses NaN
            raise ExportError(
                f"{where}parity check failed: onnxruntime's outputs differ from torch's by "
                f"up to {diff:.3g} on {count} test inputs (tolerance {tolerance:g}); nothing "
                "written"
            )
        metadata = common | {
            "input_shape": json.dumps(list(part.inputs[0].shape[1:])),
            "preprocessing": json.dumps(part_preprocessing(part, tm.spec)),
            "output": _describe_output(part.output, expected),
            "parity_max_abs_diff": f"{diff:.3g}",
        }
        if len(parts) > 1 or part.modality:
            metadata["part"] = name
        if len(part.inputs) > 1:
            metadata["input_names"] = json.dumps(list(part.input_names))
        if part.output == "logits":
            metadata["labels"] = json.dumps(
                list(tm.spec.label_names) or [str(i) for i in range(tm.spec.num_classes)]
            )
        if part.modality == "text" and tm.tokenizer is not None:
            metadata["tokenizer"] = tm.tokenizer
        metadata |= part.metadata
        onnx.helper.set_model_props(proto, {META + k: v for k, v in metadata.items()})
        what = f"{tm.architecture}, part '{name}'" if len(parts) > 1 else tm.architecture
        proto.doc_string = f"autoplat: study '{study.name}', trial {trial.number} ({what})"
        staged.append((Exported(paths[name], diff, count, metadata, name), proto))
    write_files([(done.path, proto.SerializeToString()) for done, proto in staged], force)
    return [done for done, _ in staged]


def _describe_output(output: str, values: np.ndarray) -> str:
    """What the output is; embeddings that all have norm 1 say so."""
    text = OUTPUTS.get(output, output)
    if output == "embedding" and values.ndim == 2:
        norms = np.linalg.norm(values, axis=1)
        if len(norms) and np.allclose(norms, 1.0, atol=1e-3):
            text += " (unit length: dot products are cosine similarities)"
    return text


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
        prep = preprocessing(DataSpec("classification", "image", shape))
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
