"""The model commands: `export` (a trial's model to ONNX, checked against torch) and
`predict` (run an exported model on files)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from autoplat.cli import add_plugin_option, add_storage_option, err, load_registry, out, storage
from autoplat.core.hookspecs import Command

DB = "--storage sqlite:///runs/quickstart.db"


def cmd_export(args: argparse.Namespace) -> int:
    from autoplat.core.export import (
        check_out,
        export_trial,
        find_trial,
        load_trial_model,
        protected_files,
    )
    from autoplat.core.store import Store

    load_registry(args)  # --plugin: the modules the study's architecture and dataset come from
    store = Store(storage(args), create=False)  # read only: export writes nothing to it
    study, trial = find_trial(store, args.study, args.trial)
    target = Path(args.out or f"{study.name}-trial{trial.number}.onnx")
    protected = protected_files(store)
    check_out(target, protected, args.force)  # before any work; each part's file again below
    tm = load_trial_model(store, study.name, trial.number)
    try:
        done = export_trial(
            tm,
            target,
            tolerance=args.tolerance,
            opset=args.opset,
            force=args.force,
            protected=protected,
        )
    except OSError as exc:
        err.print(f"error: cannot write the ONNX file(s) for {target}: {exc}", markup=False)
        return 1
    if args.json:
        print(json.dumps(_export_json(tm, done, args), indent=2))
        return 0
    value = f"{tm.trial.value:.4f}" if tm.trial.value is not None else "?"
    head = f"exported trial {tm.trial.number} of study '{tm.study.name}' "
    head += f"({tm.study.metric}={value})"
    if len(done) == 1:
        (one,) = done
        out.print(
            f"{head} to {one.path} ({one.path.stat().st_size / 1e6:.2f} MB, opset {args.opset}, "
            "dynamic batch)"
        )
        out.print(
            f"parity on {one.parity_inputs} test inputs: max |onnxruntime - torch| = "
            f"{one.max_abs_diff:.3g} (tolerance {args.tolerance:g})"
        )
    else:
        out.print(f"{head} as {len(done)} files, one per part (opset {args.opset}, dynamic batch):")
        for d in done:
            out.print(
                f"  {d.part}: {d.path} ({d.path.stat().st_size / 1e6:.2f} MB); parity on "
                f"{d.parity_inputs} test inputs: max |onnxruntime - torch| = "
                f"{d.max_abs_diff:.3g} (tolerance {args.tolerance:g})"
            )
    examples = {"image": "IMAGE.png", "text": '"a caption"', "video": "FRAMES_DIR/ or VIDEO.npy"}
    examples |= {"audio": "SOUND.wav"}
    for d in done:
        modality = json.loads(d.metadata["preprocessing"]).get("modality", "")
        example = examples.get(modality, "FEATURES.csv or ARRAY.npy")
        ranks = "parts" in d.metadata and modality in {"image", "video"}
        texts = ' --texts "a caption" ...' if ranks else ""
        out.print(f"predict with: platform predict {d.path} {example} ...{texts}")
    return 0


def _export_json(tm: Any, done: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """What `export --json` prints: the trial exported and each file with its parity."""
    return {
        "study": tm.study.name,
        "trial": tm.trial.number,
        "metric": tm.study.metric,
        "value": tm.trial.value,
        "opset": args.opset,
        "tolerance": args.tolerance,
        "files": [
            {
                "part": d.part,
                "path": str(d.path),
                "bytes": d.path.stat().st_size,
                "parity_inputs": d.parity_inputs,
                "max_abs_diff": d.max_abs_diff,
            }
            for d in done
        ],
    }


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from autoplat.core.predict import (
        PredictError,
        background_hint,
        load_inputs,
        model_info,
        open_session,
        predict,
        rank_texts,
        run_batches,
    )

    session = open_session(args.model)
    info = model_info(session)
    names, x = load_inputs(args.inputs, info, invert=args.invert)
    hint = background_hint(names, x, info, args.invert) if isinstance(x, np.ndarray) else ""
    if hint:
        print(hint, file=sys.stderr)  # unwrapped: it names a path
    if info.output == "logits" and not args.texts:
        rows = predict(session, x, info.labels, args.batch_size)
        if args.out:
            np.save(args.out, run_batches(session, x, args.batch_size))
        if args.json:
            results = [
                {"input": name, "label": label, "index": index, "probability": prob}
                for name, (label, index, prob) in zip(names, rows, strict=True)
            ]
            print(json.dumps(results, indent=2))
            return 0
        table = Table(title=f"{args.model} · {session.get_providers()[0]}")
        for column in ("input", "label", "probability"):
            table.add_column(column, overflow="fold")
        for name, (label, _, prob) in zip(names, rows, strict=True):
            table.add_row(name, label, f"{prob:.4f}")
        out.print(table)
        return 0
    if info.output == "logits":
        raise PredictError("--texts ranks captions with an embedding model (clip, video-text)")
    y = run_batches(session, x, args.batch_size)
    if args.out:
        np.save(args.out, y)
    if args.texts:
        probs = rank_texts(args.model, info, y, args.texts, args.batch_size)
        if args.json:
            results = [
                {"input": n, "texts": dict(zip(args.texts, map(float, p), strict=True))}
                for n, p in zip(names, probs, strict=True)
            ]
            print(json.dumps(results, indent=2))
            return 0
        table = Table(title=f"{args.model} · zero-shot over {len(args.texts)} texts")
        for column in ("input", "best text", "probability"):
            table.add_column(column, overflow="fold")
        for name, p in zip(names, probs, strict=True):
            table.add_row(name, args.texts[int(p.argmax())], f"{p.max():.4f}")
        out.print(table)
        return 0
    if args.json:
        values = [{"input": n, info.output: v.tolist()} for n, v in zip(names, y, strict=True)]
        print(json.dumps(values))
        return 0
    table = Table(title=f"{args.model} · {info.output} {tuple(y.shape[1:])}")
    for column in ("input", "norm", "first values"):
        table.add_column(column, overflow="fold")
    for name, v in zip(names, y, strict=True):
        flat = v.reshape(-1)
        first = " ".join(f"{value:+.3f}" for value in flat[:4]) + (" ..." if flat.size > 4 else "")
        table.add_row(name, f"{np.linalg.norm(flat):.4f}", first)
    out.print(table)
    if args.out:
        out.print(f"wrote {y.shape} to {args.out}")
    return 0


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name")
    p.add_argument("--trial", type=int, metavar="N", help="trial number (default: the best trial)")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="output file (default: STUDY-trialN.onnx) in an existing folder; a model of "
        "several parts (towers) writes FILE.<part>.onnx for each, e.g. model.image.onnx and "
        "model.text.onnx. Files are written only when every part passed its parity check "
        "(to a temporary name, then renamed): a failed export leaves no file. Never "
        "overwrites an existing file without --force, nor ever the store's own files or "
        "the checkpoints it records",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_storage_option(p)
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        metavar="X",
        help="largest |onnxruntime - torch| allowed on the test inputs (default 1e-4)",
    )
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    add_plugin_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")


class _Intermixed(argparse.ArgumentParser):
    """Options anywhere among the positionals (argparse's intermixed parsing), e.g.
    ``platform predict m.onnx a.png --json b.png``."""

    _outer = True

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if not self._outer:  # the two passes parse_known_intermixed_args makes
            return super().parse_known_args(args, namespace)
        self._outer = False
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._outer = True


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.__class__ = _Intermixed  # the parser `platform` made for this command
    p.add_argument("model", help="an .onnx file written by `platform export`")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, frame folders, audio files, texts (or .txt files of lines) for a "
        "text part, .npy/.npz arrays, CSV/Parquet of features; options may come before, "
        "between or after them",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="examples per run (default 64)"
    )
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert images (1 - pixel): for dark ink on a light background when the model "
        "was trained on light-on-dark images (e.g. digits); predict prints a hint when "
        "images look the other way round from the model's training images",
    )
    p.add_argument(
        "--texts",
        nargs="+",
        metavar="TEXT",
        help="rank these texts for each input (zero-shot) with the text part exported beside "
        "an image or video part; it takes every value up to the next option, so give it "
        "after the inputs (or end it with --)",
    )
    p.add_argument(
        "--out", metavar="FILE", help="save the outputs (logits, embeddings, ...) as a .npy file"
    )
    p.add_argument("--json", action="store_true", help="print JSON")


COMMANDS = (
    Command(
        "export",
        "export a trial's model to ONNX, checked against torch",
        f"platform export quickstart {DB} \\\n    --trial 3 --out digits.onnx",
        _export_arguments,
        cmd_export,
    ),
    Command(
        "predict",
        "run an exported model on images, videos, audio, text, .npy or tables",
        "platform predict digits.onnx seven.png more.npy --json\n"
        'platform predict clip.image.onnx a.png --texts "a red circle" "a blue square"',
        _predict_arguments,
        cmd_predict,
    ),
)
