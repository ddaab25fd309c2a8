"""Active-learning curves of every registered acquisition, through `platform al`'s own loop.

Each dataset runs as one `platform al` study (Ray Tune trials, a SQLite store in a temp
folder): an MLP trained from scratch every round, 20 random initial labels, batches of
10 (digits) or 50 (mnist5k), a simulated oracle. Printed per acquisition: AULC (area
under the test-accuracy curve over the label range, mean +- std over seeds), its ratio
to random's, and test accuracy at fixed label counts. The reference measured in the same
run is a logistic regression (scikit-learn) with random and margin sampling on the same
splits, seeds and schedule. Usage::

    python benchmarks/al_curves.py                 # 10 seeds, digits and mnist5k
    python benchmarks/al_curves.py --quick         # 2 seeds, 4 acquisitions, digits, 60 labels
    python benchmarks/al_curves.py --seeds 5 --json al.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("AUTOPLAT_BUILTIN_ONLY", "1")

import numpy as np  # noqa: E402

from autoplat.core.active_learning import LoopSettings, initial_indices, round_sizes  # noqa: E402
from autoplat.core.al_study import learning_curves, load_al_config, run_al  # noqa: E402
from autoplat.core.registry import get_registry  # noqa: E402
from autoplat.core.store import Store  # noqa: E402

DATASETS = {
    # name: (batch, budget, label counts to print, training epochs, training batch size)
    "digits": (10, 200, (50, 100, 200), 100, 16),
    "mnist5k": (50, 520, (120, 320, 520), 40, 32),
}
CONFIG = """
[study]
name = "{name}"
seeds = {seeds}

[model]
name = "mlp"
hidden = 256
depth = 1
dropout = 0.2

[training]
epochs = {epochs}
lr = 0.01
batch_size = {train_batch}
weight_decay = 0.001

[dataset]
name = "{dataset}"

[al]
acquisitions = {acquisitions}
initial = 20
batch_size = {batch}
budget = {budget}

[resources]
cpus_per_trial = 1
"""


def logistic_reference(
    dataset: str, seeds: int, settings: LoopSettings, strategy: str
) -> dict[int, list[float]]:
    """Test accuracy by label count of a logistic regression with random or margin sampling."""
    from sklearn.linear_model import LogisticRegression

    plugin = get_registry().get("datasets", dataset)
    splits = plugin.load(plugin.Options(), 0)
    x = splits.train[0].flatten(1).numpy()
    y = splits.train[1].numpy()
    x_test, y_test = splits.test[0].flatten(1).numpy(), splits.test[1].numpy()
    sizes = round_sizes(settings, len(y))
    curves: dict[int, list[float]] = {n: [] for n in sizes}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        labeled = initial_indices(splits.train[1], sizes[0], seed, stratified=False)
        model = None
        for n in sizes:
            if model is not None:
                rest = np.setdiff1d(np.arange(len(y)), labeled)
                if strategy == "random":
                    new = rng.choice(rest, n - len(labeled), replace=False)
                else:
                    top2 = np.sort(model.predict_proba(x[rest]), axis=1)[:, -2:]
                    new = rest[
                        np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[: n - len(labeled)]
                    ]
                labeled = [*labeled, *new.tolist()]
            model = LogisticRegression(max_iter=2000).fit(x[labeled], y[labeled])
            curves[n].append(float((model.predict(x_test) == y_test).mean()))
    return curves


def run_dataset(
    dataset: str, seeds: int, acquisitions: list[str], budget: int | None, folder: Path
):
    batch, full_budget, _, epochs, train_batch = DATASETS[dataset]
    budget = budget or full_budget
    path = folder / f"{dataset}.toml"
    path.write_text(
        textwrap.dedent(
            CONFIG.format(
                name=f"bench-{dataset}",
                seeds=seeds,
                dataset=dataset,
                acquisitions=json.dumps(acquisitions),
                batch=batch,
                budget=budget,
                epochs=epochs,
                train_batch=train_batch,
            )
        )
    )
    resolved = load_al_config(path, get_registry())
    store = Store(f"sqlite:///{folder / 'al.db'}")
    start = time.perf_counter()
    study_id = run_al(resolved, store)
    seconds = time.perf_counter() - start
    failed = [t for t in store.trials(study_id) if t.state == "fail"]
    for t in failed:
        print(f"FAILED {t.params_dict}: {t.error}", file=sys.stderr)
    return learning_curves(store.al_rounds(study_id)), resolved.settings, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--acquisitions", nargs="+", help="default: every registered one")
    parser.add_argument("--budget", type=int, help="total labels (default: per dataset)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 4 acquisitions, digits")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    acquisitions = args.acquisitions or sorted(get_registry().names("acquisitions"))
    datasets, seeds, budget = args.datasets, args.seeds, args.budget
    if args.quick:
        acquisitions = args.acquisitions or ["random", "margin", "entropy", "badge"]
        datasets, seeds, budget = ["digits"], 2, 60
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            curves, settings, seconds = run_dataset(dataset, seeds, acquisitions, budget, Path(tmp))
            reference = {
                f"logreg-{s}": logistic_reference(dataset, seeds, settings, s)
                for s in ("random", "margin")
            }
            results[dataset] = {"curves": curves, "reference": reference, "seconds": seconds}
            print_table(dataset, curves, reference, seeds, seconds)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(dataset: str, curves: dict, reference: dict, seeds: int, seconds: float) -> None:
    at = [n for n in DATASETS[dataset][2] if any(n in c["labels"] for c in curves.values())]
    random_aulc = curves.get("random", {}).get("aulc")
    print(f"\n{dataset}: {seeds} seeds, {len(curves)} acquisitions, {seconds:.0f} s")
    header = f"{'acquisition':18} {'AULC':>15} {'/random':>8}" + "".join(
        f"{f'acc@{n}':>15}" for n in at
    )
    print(header)
    print("-" * len(header))
    ranked = sorted(curves.items(), key=lambda kv: -(kv[1]["aulc"] or (0, 0))[0])
    for name, c in ranked:
        area = c["aulc"]
        ratio = f"{area[0] / random_aulc[0]:.3f}" if area and random_aulc else "-"
        by_n = dict(zip(c["labels"], zip(c["mean"], c["std"], strict=True), strict=True))
        cells = "".join(
            f"{by_n[n][0]:>8.3f} ± {by_n[n][1]:.3f}" if n in by_n else f"{'-':>15}" for n in at
        )
        print(f"{name:18} {area[0]:>7.4f} ± {area[1]:.4f} {ratio:>8}{cells}" if area else name)
    for name, curve in reference.items():
        cells = "".join(
            f"{statistics.fmean(curve[n]):>8.3f} ± {statistics.pstdev(curve[n]):.3f}"
            if n in curve
            else f"{'-':>15}"
            for n in at
        )
        print(f"{name + ' (ref)':18} {'':>15} {'':>8}{cells}")


if __name__ == "__main__":
    main()
