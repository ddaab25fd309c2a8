"""ONNX export of a trial's model.

Export writes one ONNX file per part of the model (``Architecture.onnx_parts``: the
whole classifier, or each tower of a multimodal model), each with metadata and checked
against torch (through onnxruntime) on the test split. autoplat.core.predict reads them.
"""

from __future__ import annotations

import io
import json
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
from autoplat.core.predict import (
    BATCH_SIZE,
    META,
    OUTPUTS,
    image_preprocessing,
    open_session,
    run_batches,
    with_border_mean,
)
from autoplat.core.space import split_dataset_params
from autoplat.core.store import Store, Study, Trial, TrialState

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

OPSET = 17
TOLERANCE = 1e-4
"""Largest absolute difference between onnxruntime and torch outputs that export accepts."""
INPUT, OUTPUT = "input", "logits"


class ExportError(AutoplatError):
    """A trial cannot be exported, or its export does not match the torch model."""


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
    return image_preprocessing(spec.input_shape)


def part_preprocessing(part: OnnxPart, spec: DataSpec) -> dict[str, Any]:
    """The preprocessing stored with a part: by its modality, plus its own keys."""
    shape = tuple(part.inputs[0].shape[1:])
    modality = part.modality or spec.modality
    if not part.modality:
        prep = preprocessing(spec)
    elif modality == "image" and len(shape) == 3:
        prep = image_preprocessing(shape)
    elif modality == "video" and len(shape) == 4:
        prep = image_preprocessing(shape) | {
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
            "preprocessing": json.dumps(
                with_border_mean(part_preprocessing(part, tm.spec), part.inputs[0])
            ),
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
