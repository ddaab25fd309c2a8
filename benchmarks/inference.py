"""Inference speed of exported models: torch eager against onnxruntime, in the same run.

For each model it measures batch-1 latency and batch-64 throughput of torch eager
(``inference_mode``) and of the same weights exported by ``platform export``'s code path and
run by onnxruntime's CPU provider: the ViT classifier on 8x8 (digits) and 28x28 (MNIST)
inputs, CLIP's image tower (32x32 RGB) and text tower (16 token ids), and DINO's feature
extractor (28x28); a tower is the part ``Architecture.onnx_parts`` exports, run on random
inputs of its shape (token rows: [BOS], random words, [EOS], padding). torch and
onnxruntime get the same number of threads (``--threads``; onnxruntime's intra-op threads,
one inter-op thread). Each measurement runs in ``--rounds`` interleaved rounds and the table
shows the best round: the noise of a busy machine only ever adds time. Weights are random:
speed does not depend on them. Usage::

    python benchmarks/inference.py            # 5 rounds, about a minute
    python benchmarks/inference.py --quick    # 3 short rounds, well under a minute
    python benchmarks/inference.py --threads 2 --json inference.json

Target (issue 10): onnxruntime at least 1.5x torch eager at batch 1 on CPU for the ViT.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("AUTOPLAT_BUILTIN_ONLY", "1")

TARGET = 1.5  # onnxruntime / torch eager speed-up wanted at batch 1 for the ViT
BATCH = 64
# A mid-size point of autoplat/search_spaces/vit.toml; the patch grows with the image so
# the 28x28 model sees 49 patches (plus the cls token) instead of 196.
VIT = {"depth": 2, "width": 64, "heads": 4, "mlp_ratio": 2, "dropout": 0.1}


# Small towers of autoplat/search_spaces/clip.toml's kind, ViT image tower.
CLIP = {
    "image_tower": "vit",
    "image_depth": 2,
    "image_width": 64,
    "image_heads": 4,
    "patch_size": 4,
    "text_depth": 2,
    "text_width": 64,
    "text_heads": 4,
    "embed_dim": 64,
}
VOCAB, TEXT_LENGTH = 512, 16


@dataclass(frozen=True)
class Case:
    """One model (or one exported part of it) on one input shape."""

    name: str
    architecture: str
    params: dict[str, Any]
    input_shape: tuple[int, ...]  # the images of the model's data
    part: str = "model"  # which of ``Architecture.onnx_parts`` to run
    vocab_size: int = 0  # > 0: the data also has captions (token ids)


CASES = [
    Case("vit 8x8", "vit", {**VIT, "patch_size": 2}, (1, 8, 8)),
    Case("vit 28x28", "vit", {**VIT, "patch_size": 4}, (1, 28, 28)),
    Case("clip image 32x32", "clip", CLIP, (3, 32, 32), "image", VOCAB),
    Case(f"clip text L={TEXT_LENGTH}", "clip", CLIP, (3, 32, 32), "text", VOCAB),
    Case("dino 28x28", "dino", {**VIT, "patch_size": 4}, (1, 28, 28), "features"),
]


def random_split(case: Case, n: int) -> tuple[Any, ...]:
    """A test split of random data shaped like the case's: images[, token ids], labels."""
    import torch

    images = torch.rand(n, *case.input_shape)
    labels = torch.zeros(n, dtype=torch.long)
    if not case.vocab_size:
        return images, labels
    tokens = torch.zeros(n, TEXT_LENGTH, dtype=torch.long)  # [PAD] = 0
    lengths = torch.randint(3, TEXT_LENGTH + 1, (n,))
    for row, length in enumerate(lengths.tolist()):
        tokens[row, 1 : length - 1] = torch.randint(4, case.vocab_size, (length - 2,))
        tokens[row, 0], tokens[row, length - 1] = 2, 3  # [BOS], [EOS]
    return images, tokens, labels


def seconds_per_call(fn: Callable[[], Any], calls: int) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure(case: Case, threads: int, rounds: int, calls_1: int, calls_64: int) -> dict:
    """Batch-1 latency and batch-64 throughput of torch and onnxruntime for one case."""
    import numpy as np
    import torch

    from autoplat.core.export import OPSET, to_onnx
    from autoplat.core.interfaces import DataSpec, Splits
    from autoplat.core.predict import open_session
    from autoplat.core.registry import get_registry

    torch.manual_seed(0)
    if case.vocab_size:
        text = {"vocab_size": case.vocab_size, "text_length": TEXT_LENGTH}
        spec = DataSpec("contrastive", "image-text", case.input_shape, 10, **text)
    else:
        spec = DataSpec("classification", "image", case.input_shape, 10)
    arch = get_registry().get("architectures", case.architecture)
    split = random_split(case, BATCH)
    part = arch.onnx_parts(arch.build(case.params, spec).eval(), Splits(split, split, split, spec))
    model = part[case.part].module.eval()
    x64 = part[case.part].inputs[0]
    x1 = x64[:1]
    session = open_session(
        to_onnx(model, x1, OPSET), threads=threads, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    n1, n64 = x1.numpy(), x64.numpy()

    def torch_run(x: torch.Tensor) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return model(x)

        return run

    def ort_run(x: np.ndarray) -> Callable[[], Any]:
        return lambda: session.run(None, {name: x})

    with torch.inference_mode():
        diff = float(np.abs(ort_run(n64)()[0] - model(x64).numpy()).max())
    runs = {
        "torch_b1": (torch_run(x1), calls_1),
        "ort_b1": (ort_run(n1), calls_1),
        "torch_b64": (torch_run(x64), calls_64),
        "ort_b64": (ort_run(n64), calls_64),
    }
    for fn, calls in runs.values():  # warm up: first calls allocate and pick kernels
        seconds_per_call(fn, max(3, calls // 10))
    best = {key: float("inf") for key in runs}
    for _ in range(rounds):
        for key, (fn, calls) in runs.items():
            best[key] = min(best[key], seconds_per_call(fn, calls))
    return {
        "case": case.name,
        "architecture": case.architecture,
        "params": case.params,
        "part": case.part,
        "input_shape": list(x64.shape[1:]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "max_abs_diff": diff,
        "torch_b1_ms": best["torch_b1"] * 1e3,
        "ort_b1_ms": best["ort_b1"] * 1e3,
        "b1_speedup": best["torch_b1"] / best["ort_b1"],
        "torch_b64_per_s": BATCH / best["torch_b64"],
        "ort_b64_per_s": BATCH / best["ort_b64"],
        "b64_speedup": best["torch_b64"] / best["ort_b64"],
    }


def print_table(rows: list[dict[str, Any]], threads: int, rounds: int) -> bool:
    """Print the table and the target line; returns whether the target is met."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Inference on CPU, {threads} thread(s) each, best of {rounds} rounds",
        caption="speed-up: onnxruntime / torch eager (higher is better for onnxruntime)",
    )
    columns = (
        "model",
        "params",
        "b1 torch ms",
        "b1 ort ms",
        "b1 speed-up",
        f"b{BATCH} torch ex/s",
        f"b{BATCH} ort ex/s",
        f"b{BATCH} speed-up",
        "max |diff|",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(
            r["case"],
            f"{r['parameters']:,}",
            f"{r['torch_b1_ms']:.3f}",
            f"{r['ort_b1_ms']:.3f}",
            f"{r['b1_speedup']:.2f}x",
            f"{r['torch_b64_per_s']:,.0f}",
            f"{r['ort_b64_per_s']:,.0f}",
            f"{r['b64_speedup']:.2f}x",
            f"{r['max_abs_diff']:.1e}",
        )
    console = Console(width=None if sys.stdout.isatty() else 130)
    console.print(table)
    worst = min(r["b1_speedup"] for r in rows if r["architecture"] == "vit")
    met = worst >= TARGET
    verdict = "PASS" if met else "FAIL"
    console.print(
        f"ViT batch-1 speed-up, worst case: {worst:.2f}x (target >= {TARGET}x): {verdict}"
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 short rounds, < 1 minute")
    parser.add_argument("--threads", type=int, default=1, help="torch and ort threads (1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 3)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    calls_1, calls_64 = (50, 5) if args.quick else (200, 20)

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = [measure(case, args.threads, rounds, calls_1, calls_64) for case in CASES]
    met = print_table(rows, args.threads, rounds)
    if args.json:
        payload = {
            "benchmark": "inference",
            "threads": args.threads,
            "rounds": rounds,
            "calls_per_round": {"batch_1": calls_1, f"batch_{BATCH}": calls_64},
            "statistic": "best (lowest) mean time per call over the rounds",
            "target_b1_speedup": TARGET,
            "target_met": met,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "wall_s": round(time.perf_counter() - started, 1),
            "cases": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
