"""The audio spectrogram transformer against the CNN on sound-events, at the same small
CPU budget.

Each row trains ``audio`` in process (no Ray) on the shipped ``sound-events`` data with
the sizes, front end and trainer of examples/audio_events.toml (600 train, 150 val, 150
test clips of 0.5 s at 8 kHz, seed 0; hop 128, 32 mel bins; 5 epochs, batches of 32, lr
3e-3, 1 warmup epoch) and reports val and test accuracy (chance 1/6). One thread, so
runs repeat exactly. Usage::

    python benchmarks/ast_vs_cnn.py [--seeds 0 1 2] [--epochs 5] \
        [--row NAME:key=value,key=value ...]

Without ``--row`` the rows are ``ROWS``: the CNN, and the AST (width 32, patches of 4)
with one recipe piece changed at a time; a row's params override the architecture's
defaults and the trainer's (e.g. ``--row ast-lr1e-3:encoder=ast,lr=1e-3``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

COMMON = {"epochs": 5, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.05, "warmup_epochs": 1}
COMMON |= {"hop_length": 128, "n_mels": 32}  # as examples/audio_events.toml
DATA = {"n_train": 600, "n_val": 150, "n_test": 150}  # as examples/audio_events.toml
AST = {"encoder": "ast", "width": 32, "patch_size": 4}
ROWS = {
    "cnn": {"encoder": "cnn"},
    "cnn, width 16": {"encoder": "cnn", "width": 16},
    "ast, width 16 (issue 20)": AST | {"width": 16},
    "ast": AST,
    "ast, overlap 2": AST | {"patch_overlap": 2},
    "ast, mean pooling": AST | {"pooling": "mean"},
    "ast, batch 16, lr 5e-3": AST | {"batch_size": 16, "lr": 5e-3},
    "ast, 20 epochs": AST | {"epochs": 20},
    "ast, 20 epochs, SpecAugment": AST | {"epochs": 20, "freq_mask": 4, "time_mask": 4},
    "ast, 20 epochs, mean pooling": AST | {"epochs": 20, "pooling": "mean"},
}


def parse_row(text: str) -> tuple[str, dict[str, object]]:
    """``NAME:key=value,...`` -> (NAME, params); values parsed as JSON where they parse."""
    name, _, rest = text.partition(":")
    params: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def run_row(params: dict[str, object], seed: int) -> dict[str, float]:
    """Train one model; its last report plus the wall time and the model's size."""
    from autoplat.plugins.architectures.audio import Audio
    from autoplat.plugins.datasets.audio import SoundEvents, SoundOptions

    splits = SoundEvents().load(SoundOptions(**DATA), seed=0)
    arch = Audio()
    model_params = {k: v for k, v in params.items() if k in arch.defaults}
    if (reason := arch.check_params(model_params, splits.spec)) is not None:
        raise SystemExit(reason)
    torch.manual_seed(seed)
    model = arch.build(model_params, splits.spec)
    start = time.process_time()  # CPU seconds: steadier than wall time on a shared machine
    hyper = {k: v for k, v in params.items() if k not in arch.defaults}
    final = dict(arch.train(model, splits, hyper, lambda e, m: None, seed))
    final["seconds"] = time.process_time() - start
    final["params"] = sum(p.numel() for p in model.parameters())
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=COMMON["epochs"])
    parser.add_argument("--row", action="append", default=[], metavar="NAME:k=v,...")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 seed, few epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = [0], 2
    torch.set_num_threads(1)
    rows = dict(parse_row(r) for r in args.row) if args.row else ROWS
    if args.quick and not args.row:
        rows = {k: ROWS[k] for k in ("cnn", "ast")}
    results: dict[str, list[dict[str, float]]] = {}
    for name, overrides in rows.items():
        for seed in args.seeds:
            final = run_row(COMMON | {"epochs": args.epochs} | overrides, seed)
            results.setdefault(name, []).append(final)
            print(
                f"{name} seed {seed}: val {final['val_accuracy']:.3f} test "
                f"{final['test_accuracy']:.3f} {final['seconds']:.0f} s",
                flush=True,
            )
    print(f"\n{len(args.seeds)} seed(s), {args.epochs} epochs unless a row sets them, sound-events")
    print("| row | params | CPU s/run | val acc | test acc | test acc per seed |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        val, test = ([r[k] for r in runs] for k in ("val_accuracy", "test_accuracy"))
        seconds = statistics.mean(r["seconds"] for r in runs)
        print(
            f"| {name} | {int(runs[0]['params']):,} | {seconds:.0f} | "
            f"{statistics.mean(val):.3f} | {statistics.mean(test):.3f} | "
            f"{' '.join(f'{t:.3f}' for t in test)} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
