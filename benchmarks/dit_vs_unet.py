"""DiT against the UNet denoiser of latent diffusion on digits, at the same small CPU budget.

Each row trains ``latent-diffusion`` in process (no Ray) on scikit-learn's digits (split
seed 0) with the same autoencoder recipe and seed (so the same frozen autoencoder), then
reports the fixed classifier's accuracy on 100 guided class-conditional samples (chance
0.1) and the FID of the classifier's features. The denoiser trains ``--epochs`` (30: 600
steps of 64) at lr 1e-3 with a 1-epoch warmup and cosine decay, no weight decay; the rest
is the architecture's defaults (EMA 0.999, DDIM 25 steps, guidance 2.0). One thread, so
runs repeat exactly; times are CPU seconds. Usage::

    python benchmarks/dit_vs_unet.py [--seeds 0 1 2] [--epochs 30] [--quick] \
        [--row NAME:key=value,key=value ...]

Without ``--row`` the rows are the UNet and the DiT at the architecture's defaults; a
row's params override those (e.g. ``--row dit-lr3e-3:denoiser=dit,lr=3e-3``), and
``ablate_*`` params undo one piece of the DiT recipe (``ablate``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

COMMON = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 1}
ROWS = {"unet": {"denoiser": "unet"}, "dit": {"denoiser": "dit"}}


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


def ablate(denoiser: torch.nn.Module, params: dict[str, object]) -> None:
    """Undo one piece of the DiT recipe (``ablate_*`` params), to measure what it brings.

    ``ablate_label_std=S``: class table at std S (the paper: 0.02); ``ablate_learned_pos=1``:
    learned positions at std 0.02 instead of fixed sin-cos; ``ablate_torch_init=1``:
    PyTorch's default init instead of Xavier / normal(0.02) (adaLN-Zero kept).
    """
    if "ablate_torch_init" in params:
        for module in denoiser.modules():
            if module is not denoiser and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        zero = [block.modulation[1] for block in denoiser.blocks]
        for layer in (*zero, denoiser.final_modulation[1], denoiser.head):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    if "ablate_label_std" in params:
        torch.nn.init.normal_(denoiser.label_embed.weight, std=float(params["ablate_label_std"]))
    if "ablate_learned_pos" in params:
        learned = torch.randn_like(denoiser.pos_embed) * 0.02
        del denoiser.pos_embed
        denoiser.pos_embed = torch.nn.Parameter(learned)


def run_row(params: dict[str, object], seed: int, cache: Path) -> dict[str, float]:
    """Train one model; its last report plus the wall time and the denoiser's size."""
    from autoplat.plugins.architectures.latent_diffusion import (
        LatentDiffusion,
        train_latent_diffusion,
    )
    from autoplat.plugins.datasets.digits import Digits
    from autoplat.plugins.datasets.splits import SplitOptions

    splits = Digits().load(SplitOptions(), seed=0)
    arch = LatentDiffusion()
    model_params = {k: v for k, v in params.items() if k in arch.defaults}
    torch.manual_seed(seed)
    model = arch.build(model_params, splits.spec)
    ablate(model.denoiser, params)
    start = time.process_time()  # CPU seconds: steadier than wall time on a shared machine
    with tempfile.TemporaryDirectory() as artifacts:
        final = train_latent_diffusion(
            model, splits, params, lambda e, m: None, seed, cache_dir=cache, artifact_dir=artifacts
        )
    final = {k: v for k, v in final.items() if not k.startswith("artifact")}
    final["seconds"] = time.process_time() - start
    final["denoiser_params"] = sum(p.numel() for p in model.denoiser.parameters())
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
        args.seeds, args.epochs = [0], 5
    torch.set_num_threads(1)
    rows = dict(parse_row(r) for r in args.row) if args.row else ROWS
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, overrides in rows.items():
            for seed in args.seeds:
                params = COMMON | {"epochs": args.epochs} | overrides
                final = run_row(params, seed, Path(cache))
                results.setdefault(name, []).append(final)
                print(
                    f"{name} seed {seed}: val acc {final['val_sample_accuracy']:.2f} test acc "
                    f"{final['test_sample_accuracy']:.2f} val FID {final['val_fid']:.1f} "
                    f"denoise {final['val_denoise_loss']:.3f} {final['seconds']:.0f} s",
                    flush=True,
                )
    print(f"\n{len(args.seeds)} seed(s), {args.epochs} epochs unless a row sets them, digits")
    print("| row | denoiser params | CPU s/run | val acc | test acc | val FID | val loss |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():

        def mean(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.mean(r[key] for r in runs)

        print(
            f"| {name} | {int(runs[0]['denoiser_params']):,} | {mean('seconds'):.0f} | "
            f"{mean('val_sample_accuracy'):.3f} | {mean('test_sample_accuracy'):.3f} | "
            f"{mean('val_fid'):.1f} | {mean('val_denoise_loss'):.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
