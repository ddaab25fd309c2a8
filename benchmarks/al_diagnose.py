"""Why an acquisition scores below random: its curve and what its batches look like.

Runs ``active_learning.run_experiment`` in this process (no Ray, no store) with the
settings of ``al_curves.py``'s mnist5k row (MLP 256 wide, dropout 0.2, 20 random initial
labels, batches of 50 to 520 labels, 40 epochs from scratch each round) and prints per
acquisition: AULC and its ratio to random's (same seeds), and, averaged over the rounds,
what its batches look like:

- ``classes``: distinct classes in a batch; ``top share``: the share of its most common class;
- ``margin``: the mean top-1 minus top-2 probability of the picks under the round's model
  (the pool's mean margin in brackets); ``wrong``: the share of picks that model misclassifies;
- ``knn``: the picks' mean distance to their 10 nearest pool neighbours in the embedding,
  over the pool's median (above 1: outliers);
- ``paired diff``: the mean over seeds of (AULC - random's AULC), with its standard error
  (random must come first in ``--acquisitions``);
- ``mc spread`` (MC-dropout acquisitions): the mean over the pool of the standard
  deviation of the predicted probabilities over the MC samples.

``coreset@pixels`` runs core-set on the raw pixels instead of the model's embeddings;
``cluster_margin:clusters=50`` an instance with those settings (values in JSON).

Usage::

    python benchmarks/al_diagnose.py --seeds 5 --acquisitions random margin mean_std coreset
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

os.environ.setdefault("AUTOPLAT_BUILTIN_ONLY", "1")

import torch  # noqa: E402

from autoplat.core.active_learning import (  # noqa: E402
    Acquisition,
    LoopSettings,
    SimulatedOracle,
    aulc,
    run_experiment,
)
from autoplat.core.interfaces import Splits  # noqa: E402
from autoplat.core.registry import get_registry  # noqa: E402
from autoplat.core.training import train_classification  # noqa: E402

ARCH = {"hidden": 256, "depth": 1, "dropout": 0.2}
TRAINING = {"epochs": 40, "lr": 0.01, "batch_size": 32, "weight_decay": 0.001}
SETTINGS = LoopSettings(initial=20, batch_size=50, budget=520)


class Watched(Acquisition):
    """Delegates to ``inner`` and records what its batches look like."""

    def __init__(
        self, inner: Acquisition, pool: tuple[torch.Tensor, torch.Tensor], pixels: bool
    ) -> None:
        self.inner, (self.x_pool, self.y_pool), self.pixels = inner, pool, pixels
        self.name = inner.name
        self.needs = tuple(dict.fromkeys((*inner.needs, "probs", "embeddings")))
        self.rows: list[dict[str, float]] = []
        self.unlabeled: torch.Tensor | None = None  # pool positions of this round's outputs

    def select(self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator):
        given = {n: outputs[n] for n in self.inner.needs}
        if self.pixels:
            labeled = torch.ones(len(self.y_pool), dtype=torch.bool)
            labeled[self.unlabeled] = False
            given["embeddings"] = self.x_pool[self.unlabeled].flatten(1)
            given["labeled_embeddings"] = self.x_pool[labeled].flatten(1)
        picked = self.inner.select(given, k, rng)
        probs, x = outputs["probs"], outputs["embeddings"]
        top = probs.topk(2, 1).values
        margin = top[:, 0] - top[:, 1]
        knn = torch.cdist(x, x).topk(11, largest=False).values[:, 1:].mean(1)
        y = self.y_pool[self.unlabeled]
        counts = torch.bincount(y[picked], minlength=10)
        row = {
            "classes": float((counts > 0).sum()),
            "top share": float(counts.max() / len(picked)),
            "margin": float(margin[picked].mean()),
            "pool margin": float(margin.mean()),
            "wrong": float((probs[picked].argmax(1) != y[picked]).float().mean()),
            "knn": float(knn[picked].mean() / knn.median()),
        }
        if "mc_probs" in outputs:
            row["mc spread"] = float(outputs["mc_probs"].std(0).mean())
        self.rows.append(row)
        return picked


def run(name: str, seed: int, splits: Splits) -> tuple[float, list[dict[str, float]]]:
    registry = get_registry()
    arch = registry.get("architectures", "mlp")
    x_pool, y_pool = splits.train
    base, _, options = name.removesuffix("@pixels").partition(":")
    inner = registry.get("acquisitions", base)
    if options:  # name:key=value,key=value: an instance with those settings
        pairs = (option.split("=") for option in options.split(","))
        inner = type(inner)(**{key: json.loads(value) for key, value in pairs})
    watched = Watched(inner, (x_pool, y_pool), name.endswith("@pixels"))

    def train(labeled, labels, train_seed, model):
        taken = torch.zeros(len(y_pool), dtype=torch.bool)
        taken[labeled] = True
        watched.unlabeled = (~taken).nonzero().flatten()
        torch.manual_seed(train_seed)
        model = arch.build(ARCH, splits.spec)
        data = Splits(
            train=(x_pool[labeled], torch.tensor(labels)),
            val=splits.val,
            test=splits.test,
            spec=splits.spec,
        )
        return model, train_classification(model, data, TRAINING, lambda *_: None, train_seed)

    rows: list[dict[str, Any]] = []
    oracle = SimulatedOracle(y_pool)
    run_experiment(splits, watched, oracle, SETTINGS, seed, train, rows.append)
    area = aulc([r["n_labeled"] for r in rows], [r["test_accuracy"] for r in rows])
    return area, watched.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--acquisitions", nargs="+", default=["random", "margin"])
    parser.add_argument("--dropout", type=float, default=ARCH["dropout"], help="the MLP's")
    args = parser.parse_args()
    ARCH["dropout"] = args.dropout
    torch.set_num_threads(1)
    dataset = get_registry().get("datasets", "mnist5k")
    splits = dataset.load(dataset.Options(), 0)
    areas: dict[str, list[float]] = {}
    for name in args.acquisitions:
        start, batches = time.perf_counter(), []
        areas[name] = []
        for seed in range(args.seeds):
            area, rows = run(name, seed, splits)
            areas[name].append(area)
            batches += rows
        keys = list(batches[0])
        means = {key: statistics.fmean(r[key] for r in batches) for key in keys}
        baseline = areas.get("random", areas[name])
        ratio = statistics.fmean(areas[name]) / statistics.fmean(baseline)
        paired = [a - b for a, b in zip(areas[name], baseline, strict=True)]
        error = statistics.stdev(paired) / len(paired) ** 0.5 if len(paired) > 1 else 0.0
        print(
            f"{name:18} AULC {statistics.fmean(areas[name]):.4f} ± "
            f"{statistics.pstdev(areas[name]):.4f} /random {ratio:.3f} "
            f"(paired diff {statistics.fmean(paired):+.4f} ± {error:.4f} se)  "
            + "  ".join(f"{key} {value:.3f}" for key, value in means.items())
            + f"  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
