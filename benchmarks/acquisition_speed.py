"""Speed of core-set, BADGE and BatchBALD against scikit-activeml, on the same data.

Each row times one of autoplat's acquisitions (``autoplat.strategies.acquisition``,
torch, float32) and scikit-activeml's implementation of the same algorithm
(``skactiveml.pool``: ``CoreSet``, ``Badge``, ``batch_bald``; numpy) in the same run, on
the same synthetic pool: a 10-class Gaussian mixture of embeddings, probabilities from a
fixed linear layer on them, and MC-dropout-like samples (a shared logit per item plus
per-sample noise). Rows:

- ``coreset``: greedy k-center from a labeled set; deterministic, so the selections must
  be identical up to rounding in near-ties, and the table says whether they are. A second
  row runs ours in float64 (scikit-learn computes these distances in float64).
- ``badge``: k-means++ seeding on gradient embeddings. The first pick is deterministic
  (the largest gradient), the rest are random draws from different generators.
- ``batchbald``: greedy BatchBALD with the same number of configurations M for both (our
  ``num_configs``, the peer's ``n_MC_samples``); both enumerate the joint exactly while
  C^|A| <= M and sample after, so their picks agree until sampling starts.

scikit-activeml's Badge (it builds the N x C*D gradient matrix in float64: 2 GB at full
size) and batch_bald take seconds per pick at full size, so they run the first
``peer picks`` only and their full-batch time is extrapolated: the time of that run plus,
for each missing pick, the median time of its later picks (timed from the start of each
call of the function they call once per pick: ``_badge._d_2``,
``_DynamicJointEntropy.compute_batch``; per-pick cost is flat by then). A second row per
such algorithm compares both libraries measured at the same number of picks. Timings are
the best of ``--repeats`` runs (peers' extrapolated ones: one run). Usage::

    python benchmarks/acquisition_speed.py            # full: 10-15 minutes on 2 CPUs
    python benchmarks/acquisition_speed.py --quick    # small pool: under a minute
    python benchmarks/acquisition_speed.py --json acquisition_speed.json

Full setting: pool 50,000 x 512-d embeddings, 10 classes, batch 1,000, 1,000 labeled;
BatchBALD on a pool of 5,000 with 20 MC samples, batch 100, M = 10,000 (the full pool and
batch would take hours for either library: each pick costs M * N * C). Target (issue 6):
at least 10x faster than the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

TARGET = 10.0  # speed-up over scikit-activeml wanted


@dataclass(frozen=True)
class Setting:
    """Sizes of one benchmark run (``bb_``: the BatchBALD rows; ``peer_picks``: see above)."""

    pool: int
    dim: int
    classes: int
    batch: int
    labeled: int
    badge_peer_picks: int
    bb_pool: int
    bb_samples: int
    bb_batch: int
    bb_configs: int
    bb_peer_picks: int


FULL = Setting(50_000, 512, 10, 1_000, 1_000, 20, 5_000, 20, 100, 10_000, 12)
QUICK = Setting(5_000, 128, 10, 100, 100, 10, 500, 20, 10, 10_000, 6)


def make_data(s: Setting, seed: int = 0) -> dict[str, np.ndarray]:
    """The synthetic pool (float32), labeled set and MC-dropout samples."""
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((s.classes, s.dim))
    points = centers[rng.integers(s.classes, size=s.pool + s.labeled)]
    points += rng.standard_normal(points.shape)
    weight = rng.standard_normal((s.dim, s.classes)) / np.sqrt(s.dim)
    logits = points[: s.pool] @ weight
    probs = np.exp(logits - logits.max(1, keepdims=True))
    base = 2.5 * rng.standard_normal((1, s.bb_pool, s.classes))
    mc = base + rng.standard_normal((s.bb_samples, s.bb_pool, s.classes))
    mc = np.exp(mc - mc.max(-1, keepdims=True))
    return {
        "embeddings": points[: s.pool].astype(np.float32),
        "labeled": points[s.pool :].astype(np.float32),
        "probs": (probs / probs.sum(1, keepdims=True)).astype(np.float32),
        "mc": (mc / mc.sum(-1, keepdims=True)).astype(np.float32),
    }


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The lowest wall time of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def agreement(ours: list[int], theirs: list[int]) -> str:
    """How far two pick sequences agree."""
    same = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    if same is None and len(ours) == len(theirs):
        return f"identical ({len(ours)}/{len(ours)})"
    same = min(len(ours), len(theirs)) if same is None else same
    return f"first {same} identical, {len(set(ours) & set(theirs))}/{len(theirs)} shared"


def ours(name: str, outputs: dict[str, torch.Tensor], k: int, **options: Any) -> list[int]:
    """``k`` picks of autoplat's acquisition ``name``, seed 0."""
    from autoplat.strategies.acquisition.bayesian import BatchBALD
    from autoplat.strategies.acquisition.diversity import CoreSet
    from autoplat.strategies.acquisition.hybrid import BADGE

    acquisition = {"coreset": CoreSet, "badge": BADGE, "batchbald": BatchBALD}[name](**options)
    return acquisition.select(outputs, k, torch.Generator().manual_seed(0)).tolist()


def peer_badge(data: dict[str, np.ndarray], k: int) -> list[int]:
    """``k`` picks of scikit-activeml's Badge on the pool."""
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.pool import Badge

    class PoolProbs(SkactivemlClassifier):
        """Hands Badge the pool's fixed (probabilities, embeddings)."""

        def __init__(self, probs=None, classes=None, missing_label=np.nan):
            super().__init__(classes=classes, missing_label=missing_label)
            self.probs = probs

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X):
            return self.probs, X

    x = data["embeddings"]
    clf = PoolProbs(data["probs"], classes=np.arange(data["probs"].shape[1]))
    picked = Badge(random_state=0).query(
        x, np.full(len(x), np.nan), clf=clf, fit_clf=False, batch_size=k
    )
    return [int(i) for i in picked]


def peer_coreset(data: dict[str, np.ndarray], k: int) -> list[int]:
    """``k`` picks of scikit-activeml's CoreSet: the pool unlabeled, the labeled set labeled."""
    from skactiveml.pool import CoreSet

    x = np.concatenate([data["embeddings"], data["labeled"]])
    y = np.concatenate([np.full(len(data["embeddings"]), np.nan), np.zeros(len(data["labeled"]))])
    return CoreSet(random_state=0).query(x, y, batch_size=k).tolist()


def peer_batchbald(data: dict[str, np.ndarray], k: int, configs: int) -> list[int]:
    """``k`` picks of scikit-activeml's batch_bald with ``configs`` MC configurations."""
    from skactiveml.pool import batch_bald

    utilities = batch_bald(data["mc"].copy(), k, n_MC_samples=configs, random_state=0)
    return np.nanargmax(utilities, axis=1).tolist()


def row(
    name: str, what: str, ours_s: float, peer_s: float, peer_how: str, selections: str
) -> dict[str, Any]:
    """One table row; the speed-up is the peer's time over ours."""
    ratio = peer_s / ours_s
    return {
        "acquisition": name,
        "setting": what,
        "ours_s": round(ours_s, 3),
        "peer_s": round(peer_s, 3),
        "peer_time": peer_how,
        "speedup": round(ratio, 1),
        "target": "PASS" if ratio >= TARGET else "FAIL",
        "selections": selections,
    }


@contextmanager
def pick_starts(owner: Any, name: str) -> Iterator[list[float]]:
    """Record when each call of ``owner.name`` starts (the peer calls it once per pick)."""
    original = getattr(owner, name)
    starts: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        starts.append(time.perf_counter())
        return original(*args, **kwargs)

    setattr(owner, name, timed)
    try:
        yield starts
    finally:
        setattr(owner, name, original)


def extrapolated(
    run: Callable[[int], list[int]], per_pick: tuple[Any, str], picks: int, batch: int
) -> tuple[float, float, list[int]]:
    """A peer's time for ``batch`` picks, from one timed run of ``picks`` picks.

    Returns the estimate ``t(picks) + (batch - picks) * s`` (s: the median time of the
    run's later half of picks, once per-pick cost is steady), the measured ``t(picks)``
    and the picks.
    """
    run(2)  # warm-up, not timed: a process's first large allocations are slow
    with pick_starts(*per_pick) as starts:
        start = time.perf_counter()
        picked = run(picks)
        end = time.perf_counter()
    steps = [b - a for a, b in zip(starts, [*starts[1:], end], strict=True)]
    return (
        end - start + (batch - picks) * statistics.median(steps[picks // 2 :]),
        end - start,
        picked,
    )


def benchmark(s: Setting, repeats: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every row, in the order of the module docstring."""
    data = make_data(s)
    pool = {
        "embeddings": torch.from_numpy(data["embeddings"]),
        "labeled_embeddings": torch.from_numpy(data["labeled"]),
        "probs": torch.from_numpy(data["probs"]),
    }
    mc = {"mc_probs": torch.from_numpy(data["mc"])}
    rows = []
    size = f"pool {s.pool:,} x {s.dim}, {s.classes} classes, batch {s.batch:,}"
    log("warm-up (threads, first allocations)")
    for name, outputs in (("coreset", pool), ("badge", pool), ("batchbald", mc)):
        ours(name, outputs, 3)
    peer_coreset(data, 3)

    log("coreset: ours")
    ours_s, mine = best_time(lambda: ours("coreset", pool, s.batch), repeats)
    log("coreset: scikit-activeml")
    peer_s, theirs = best_time(lambda: peer_coreset(data, s.batch), repeats)
    what = f"{size}, {s.labeled:,} labeled"
    rows.append(row("coreset", what, ours_s, peer_s, "measured", agreement(mine, theirs)))
    log("coreset: ours in float64")
    pool64 = {key: value.double() for key, value in pool.items()}
    ours_s, mine = best_time(lambda: ours("coreset", pool64, s.batch), repeats)
    what += ", ours in float64"
    rows.append(row("coreset", what, ours_s, peer_s, "measured", agreement(mine, theirs)))

    log("badge: ours")
    ours_s, mine = best_time(lambda: ours("badge", pool, s.batch), repeats)
    p = s.badge_peer_picks
    log(f"badge: scikit-activeml, {p} picks")
    from skactiveml.pool import _badge

    peer_s, peer_p, theirs = extrapolated(
        lambda k: peer_badge(data, k), (_badge, "_d_2"), p, s.batch
    )
    same = "first pick identical" if mine[0] == theirs[0] else "first picks differ"
    same += " (later picks: draws of different generators)"
    how = f"extrapolated from {p} picks"
    rows.append(row("badge", size, ours_s, peer_s, how, same))
    ours_p, _ = best_time(lambda: ours("badge", pool, p), repeats)
    what = size.replace(f"batch {s.batch:,}", f"{p} picks")
    rows.append(row("badge", what, ours_p, peer_p, "measured", same))

    bb = f"pool {s.bb_pool:,}, {s.bb_samples} MC samples, {s.classes} classes, M = {s.bb_configs:,}"
    log("batchbald: ours")
    ours_s, mine = best_time(
        lambda: ours("batchbald", mc, s.bb_batch, num_configs=s.bb_configs), repeats
    )
    p = s.bb_peer_picks
    log(f"batchbald: scikit-activeml, {p} picks")
    from skactiveml.pool._bald import _DynamicJointEntropy

    peer_s, peer_p, theirs = extrapolated(
        lambda k: peer_batchbald(data, k, s.bb_configs),
        (_DynamicJointEntropy, "compute_batch"),
        p,
        s.bb_batch,
    )
    same = agreement(mine[:p], theirs)
    how = f"extrapolated from {p} picks"
    rows.append(row("batchbald", f"{bb}, batch {s.bb_batch}", ours_s, peer_s, how, same))
    ours_p, _ = best_time(lambda: ours("batchbald", mc, p, num_configs=s.bb_configs), repeats)
    rows.append(row("batchbald", f"{bb}, {p} picks", ours_p, peer_p, "measured", same))
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as a Markdown table."""
    columns = [
        "acquisition",
        "setting",
        "ours_s",
        "peer_s",
        "peer_time",
        "speedup",
        "target",
        "selections",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        cells = [str(r[c]) + ("x" if c == "speedup" else "") for c in columns]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small pool, under a minute")
    parser.add_argument("--repeats", type=int, help="runs per timing, best shown (1; quick 2)")
    parser.add_argument(
        "--threads", type=int, help="threads for torch and the peers' BLAS/OpenMP (default: own)"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    repeats = args.repeats or (2 if args.quick else 1)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    rows = benchmark(setting, repeats, log)
    load = (load_before, os.getloadavg()[0])
    print_table(rows)
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {load[0]:.1f} -> {load[1]:.1f}; speedup = peer s / ours s "
        f"(target >= {TARGET:g}x); best of {repeats} run(s)"
    )
    if args.json:
        payload = {
            "setting": asdict(setting),
            "quick": args.quick,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "load_average": load,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
