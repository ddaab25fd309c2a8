"""Train each model family through its own trainer and print throughput and peak memory.

On CUDA the trainers run in bf16 autocast (``autoplat.core.training.autocast``); on a
CPU the same code runs in float32, so ``--quick`` on a laptop checks that the script
works, not the numbers. Each row builds the family's model from its defaults plus the
params below, loads its synthetic dataset, and runs ``Architecture.train`` for
``epochs`` epochs (a few hundred optimizer steps in the full run):

- ``vit``: classification on shapes images (``captions = false``);
- ``clip``: contrastive image-text on captioned shapes;
- ``video-text``: VideoCLIP-style retrieval on moving-shapes videos, with the support-set
  and masked-modality losses on;
- ``dino``: self-distillation with multi-crop, iBOT and KoLeo on shapes images;
- ``audio``: log-mel + audio spectrogram transformer on synthetic sound events, with a PGD
  epsilon sweep at the end;
- ``audio-visual``: mid fusion with frozen-feature probes and a PGD sweep on both
  modalities;
- ``latent-diffusion``: KL autoencoder, then a class-conditional UNet2DModel on mnist5k,
  with DDIM samples scored by the fixed classifier (its samples/s counts the denoiser's
  epochs only, so it is a lower bound).

samples/s = training samples seen / wall seconds of the whole ``train`` call (its
per-epoch evaluation included, so it is a lower bound on pure training speed); peak
memory is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak RSS growth
on CPU. The reference in the same run is the ViT row: every other family's speed is
also printed as a ratio to it. Usage::

    python benchmarks/gpu_check.py             # real sizes: minutes on one GPU
    python benchmarks/gpu_check.py --quick     # tiny sizes, 2 epochs: a CPU smoke check
    python benchmarks/gpu_check.py --only clip --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from autoplat.core.registry import get_registry

# family -> its dataset and options, params, and what --quick changes (smaller sizes)
# Shared by audio and audio-visual: the real-size log-mel front end (16 kHz, 25 ms windows,
# 10 ms hop) and encoder, and the quick CPU smoke at 8 kHz; each matches its data's rate.
AUDIO_FULL = {
    "sample_rate": 16000,
    "n_fft": 400,
    "hop_length": 160,
    "n_mels": 64,
    "depth": 6,
    "width": 256,
    "heads": 8,
    "batch_size": 256,
}
AUDIO_QUICK = {
    "sample_rate": 8000,
    "n_fft": 256,
    "hop_length": 128,
    "n_mels": 32,
    "depth": 2,
    "width": 32,
    "heads": 2,
    "batch_size": 64,
    "robust_steps": 2,
    "robust_samples": 32,
}
AUDIO_QUICK_DATA = {"n_train": 256, "n_val": 64, "n_test": 64, "sample_rate": 8000, "duration": 0.5}

FAMILIES: dict[str, dict[str, Any]] = {
    "vit": {
        "dataset": ("shapes", {"captions": False, "image_size": 64}),
        "quick_dataset": {"n_train": 256, "n_val": 64, "n_test": 64, "image_size": 32},
        "full_dataset": {"n_train": 20_000, "n_val": 1_000, "n_test": 1_000},
        "params": {"depth": 6, "width": 256, "heads": 8, "patch_size": 8, "batch_size": 256},
        "quick_params": {"depth": 2, "width": 32, "heads": 2, "patch_size": 8, "batch_size": 64},
    },
    "clip": {
        "dataset": ("shapes", {"image_size": 64}),
        "quick_dataset": {"n_train": 256, "n_val": 64, "n_test": 64, "image_size": 32},
        "full_dataset": {"n_train": 20_000, "n_val": 1_000, "n_test": 1_000},
        "params": {
            "image_tower": "vit",
            "image_depth": 6,
            "image_width": 256,
            "image_heads": 8,
            "patch_size": 8,
            "text_depth": 4,
            "text_width": 256,
            "text_heads": 8,
            "embed_dim": 256,
            "batch_size": 256,
        },
        "quick_params": {"image_width": 32, "text_width": 32, "embed_dim": 32, "batch_size": 64},
    },
    "video-text": {
        "dataset": ("moving-shapes", {"frames": 16, "size": 32}),
        "quick_dataset": {"videos": 48, "frames": 8, "size": 16},
        "full_dataset": {"videos": 4_000},
        "params": {
            "width": 256,
            "heads": 8,
            "temporal_depth": 4,
            "text_depth": 4,
            "embed_dim": 256,
            "frame_channels": 32,
            "batch_size": 64,
            "mmm_weight": 0.2,
            "support_set_weight": 0.2,
        },
        "quick_params": {"width": 32, "embed_dim": 32, "frame_channels": 8, "batch_size": 16},
    },
    "dino": {
        "dataset": ("shapes", {"captions": False, "image_size": 64}),
        "quick_dataset": {"n_train": 256, "n_val": 64, "n_test": 64, "image_size": 32},
        "full_dataset": {"n_train": 20_000, "n_val": 1_000, "n_test": 1_000},
        "params": {
            "depth": 6,
            "width": 256,
            "heads": 8,
            "patch_size": 8,
            "prototypes": 4096,
            "batch_size": 256,
            "ibot_weight": 1.0,
            "koleo_weight": 0.1,
        },
        "quick_params": {"depth": 1, "width": 32, "heads": 2, "prototypes": 64, "batch_size": 64},
    },
    "audio": {
        "dataset": ("sound-events", {"sample_rate": 16000, "duration": 1.0}),
        "quick_dataset": AUDIO_QUICK_DATA,
        "full_dataset": {"n_train": 20_000, "n_val": 1_000, "n_test": 1_000},
        "params": {
            **AUDIO_FULL,
            "encoder": "ast",
            "patch_size": 8,
            "robust_epsilons": "0, 0.002, 0.005",
            "robust_samples": 512,
        },
        "quick_params": AUDIO_QUICK,
    },
    "audio-visual": {
        "dataset": (
            "audio-visual-events",
            {"sample_rate": 16000, "duration": 1.0, "image_size": 64},
        ),
        "quick_dataset": {**AUDIO_QUICK_DATA, "image_size": 16},
        "full_dataset": {"n_train": 20_000, "n_val": 1_000, "n_test": 1_000},
        "params": {
            **AUDIO_FULL,
            "fusion": "mid",
            "audio_patch": 8,
            "image_patch": 8,
            "eval_every": 5,
            "robust_epsilons": "0, 0.01, 0.03",
            "robust_modality": "both",
            "robust_samples": 512,
        },
        "quick_params": {**AUDIO_QUICK, "image_patch": 4},
    },
    "latent-diffusion": {
        "dataset": ("mnist5k", {}),
        "quick_dataset_name": "digits",
        "quick_dataset": {},
        "full_dataset": {},
        "params": {
            "latent_channels": 4,
            "ae_width": 64,
            "downsample": 1,
            "unet_width": 64,
            "layers_per_block": 2,
            "unet_attention": True,
            "ae_epochs": 10,
            "batch_size": 128,
            "eval_samples": 500,
            "sample_steps": 50,
        },
        "quick_params": {
            "latent_channels": 2,
            "ae_width": 16,
            "unet_width": 16,
            "layers_per_block": 1,
            "unet_attention": False,
            "ae_epochs": 1,
            "batch_size": 64,
            "eval_samples": 20,
            "sample_steps": 5,
        },
    },
}


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_family(name: str, quick: bool, epochs: int, seed: int = 0) -> dict[str, Any]:
    """Load, build and train one family; its throughput and peak memory."""
    family = FAMILIES[name]
    registry = get_registry()
    arch = registry.get("architectures", name)
    dataset_name, options = family["dataset"]
    if quick:
        dataset_name = family.get("quick_dataset_name", dataset_name)
    dataset = registry.get("datasets", dataset_name)
    sized = {**options, **family["quick_dataset" if quick else "full_dataset"]}
    splits = dataset.load(dataset.Options(**sized), seed)
    params = {**family["params"], **(family["quick_params"] if quick else {}), "epochs": epochs}
    model_params, trainer_params = arch.split_params(params)
    model = arch.build(arch.resolve_params(model_params, splits.spec), splits.spec)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = peak_rss_mb()
    reports: list[dict[str, float]] = []
    start = time.perf_counter()
    arch.train(model, splits, trainer_params, lambda epoch, m: reports.append(m), seed)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n_train = len(splits.train[0])
    batch = int(trainer_params["batch_size"])
    steps = epochs * -(-n_train // batch)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb() - rss_before
    first, last = reports[0], reports[-1]
    return {
        "family": name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_samples": n_train,
        "steps": steps,
        "seconds": round(seconds, 2),
        "samples_per_s": round(epochs * n_train / seconds, 1),
        "peak_mb": round(peak, 1),
        "loss_first_last": f"{first['train_loss']:.3f} -> {last['train_loss']:.3f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 epochs (CPU smoke)")
    parser.add_argument("--epochs", type=int, help="epochs per family (default 5; quick 2)")
    parser.add_argument("--only", choices=list(FAMILIES), action="append", help="these only")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 5)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or 'cpu'})"
    precision = "bf16 autocast" if cuda else "float32"
    print(f"device: {device}; {precision}; torch {torch.__version__}", file=sys.stderr)
    run_family("vit", quick=True, epochs=1)  # warm-up, not counted: imports, kernels, threads
    rows = []
    for name in args.only or list(FAMILIES):
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(run_family(name, args.quick, epochs))
    reference = next((r for r in rows if r["family"] == "vit"), rows[0])
    for row in rows:
        row["speed_vs_" + reference["family"]] = round(
            row["samples_per_s"] / reference["samples_per_s"], 3
        )
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if args.json:
        payload = {"device": device, "precision": precision, "epochs": epochs, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
