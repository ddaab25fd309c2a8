"""Speed of core-set, BADGE and BatchBALD against a plain-torch implementation and
scikit-activeml, on the same data, every time measured.

Each row times one of autoplat's acquisitions (``autoplat.strategies.acquisition``,
torch, float32) and two peers on the same synthetic pool, in the same run: a plain-torch
implementation of the same algorithm (what a user writes: ``plain_coreset``,
``plain_badge``, ``plain_batchbald`` below, float32, the same torch threads) and
scikit-activeml's (``skactiveml.pool``: ``CoreSet``, ``Badge``, ``batch_bald``; numpy).
The pool is a 10-class Gaussian mixture of embeddings, probabilities from a fixed linear
layer on them, and MC-dropout-like samples (a shared logit per item plus per-sample
noise). Rows:

- ``coreset``: greedy k-center from a labeled set; deterministic, so the selections must
  be identical up to rounding in near-ties, and the table says whether they are.
- ``badge``: k-means++ seeding on gradient embeddings. The first pick is deterministic
  (the largest gradient), the rest are random draws from different generators. The
  plain version builds the N x C*D gradient matrix (as scikit-activeml does, in float64)
  and takes ``torch.cdist`` to each new center.
- ``batchbald``: greedy BatchBALD with the same number of configurations M for all three
  (our ``num_configs``, the peer's ``n_MC_samples``); all enumerate the joint exactly
  while C^|A| <= M and sample after, so their picks agree until sampling starts. The
  plain version scores every item at every step (chunked), as the paper's code does.

scikit-activeml's Badge and batch_bald take seconds per pick at core-set's pool size, so
BADGE and BatchBALD run on smaller pools (the setting column says which), where every
peer runs the whole batch: nothing is extrapolated. Timings are the best of
``--repeats`` runs. Usage::

    python benchmarks/acquisition_speed.py            # full: 10-15 minutes on 2 CPUs
    python benchmarks/acquisition_speed.py --quick    # small pools: about a minute
    python benchmarks/acquisition_speed.py --json acquisition_speed.json

Full setting: core-set on a pool of 50,000 x 512-d embeddings, 10 classes, batch 1,000,
1,000 labeled; BADGE on 10,000 x 128, batch 200; BatchBALD on a pool of 1,000 with 20 MC
samples, batch 16, M = 10,000 (each pick costs M * N * C). Targets: at least 10x
scikit-activeml (issue 6) and faster than the plain-torch code (issue 21).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

TARGET = 10.0  # speed-up over scikit-activeml wanted
ALGORITHMS = ("coreset", "badge", "batchbald")


@dataclass(frozen=True)
class Setting:
    """Sizes of one benchmark run (``badge_``: the BADGE rows; ``bb_``: the BatchBALD rows)."""

    pool: int
    dim: int
    classes: int
    batch: int
    labeled: int
    badge_pool: int
    badge_dim: int
    badge_batch: int
    bb_pool: int
    bb_samples: int
    bb_batch: int
    bb_configs: int


FULL = Setting(50_000, 512, 10, 1_000, 1_000, 10_000, 128, 200, 1_000, 20, 16, 10_000)
QUICK = Setting(5_000, 128, 10, 100, 100, 2_000, 64, 50, 500, 20, 10, 10_000)


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


def plain_coreset(x: torch.Tensor, labeled: torch.Tensor, k: int) -> list[int]:
    """Greedy k-center as a user writes it in torch: squared norms once, then one
    matrix-vector product per pick for the distances to the new center."""
    sq = (x * x).sum(1)
    nearest = torch.cdist(x, labeled).min(dim=1).values.square()
    picks = []
    for _ in range(k):
        i = int(nearest.argmax())
        picks.append(i)
        nearest = torch.minimum(nearest, sq - 2 * (x @ x[i]) + sq[i])
    return picks


def plain_badge(x: torch.Tensor, probs: torch.Tensor, k: int) -> list[int]:
    """BADGE as a user writes it in torch: the N x C*D gradient embeddings, then k-means++
    seeding (first pick: the largest gradient; then D^2 draws)."""
    onehot = torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).to(probs)
    grads = ((probs - onehot)[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    first = int((grads * grads).sum(1).argmax())
    picks = [first]
    d2 = torch.cdist(grads, grads[first : first + 1])[:, 0] ** 2
    generator = torch.Generator().manual_seed(0)
    for _ in range(k - 1):
        i = int(torch.multinomial(d2, 1, generator=generator))
        picks.append(i)
        d2 = torch.minimum(d2, torch.cdist(grads, grads[i : i + 1])[:, 0] ** 2)
    return picks


def plain_batchbald(mc: torch.Tensor, k: int, configs: int, chunk: int = 64) -> list[int]:
    """BatchBALD as the paper's code does it, in plain torch: every step scores every item
    (in chunks) by H[y_A, y_n] - E_w H[y_n|w]; the joint p(y_A|w) is enumerated while it
    has at most ``configs`` configurations, then ``configs`` sampled ones (importance
    weights p(c, y) / p(c))."""
    samples, n, classes = mc.shape
    conditional = -(mc * mc.clamp_min(1e-30).log()).sum(-1).mean(0)
    joint = torch.ones(samples, 1)  # p(y_A = c | w_s) per configuration c
    sampled = False
    generator = torch.Generator().manual_seed(0)
    picks: list[int] = []
    for _ in range(k):
        scores = torch.full((n,), -torch.inf)
        weight = 1 / joint.mean(0) if sampled else torch.ones(joint.shape[1])
        for start in range(0, n, chunk):
            p = torch.einsum("sc,sny->ncy", joint, mc[:, start : start + chunk]) / samples
            plogp = p * p.clamp_min(1e-30).log()
            h = -(plogp * weight[None, :, None]).sum((1, 2)) / (joint.shape[1] if sampled else 1)
            scores[start : start + chunk] = h - conditional[start : start + chunk]
        scores[picks] = -torch.inf
        i = int(scores.argmax())
        picks.append(i)
        if not sampled and joint.shape[1] * classes <= configs:  # enumerate
            joint = (joint[:, :, None] * mc[:, i, None, :]).reshape(samples, -1)
            continue
        if not sampled:  # draw configs configurations of y_A from p(y_A)
            sampled = True
            w = torch.arange(configs) % samples
            c = torch.multinomial(joint[w], 1, generator=generator)[:, 0]
            joint = joint[:, c]
        w = torch.arange(joint.shape[1]) % samples
        y = torch.multinomial(mc[w, i], 1, generator=generator)[:, 0]
        joint = joint * mc[:, i, y]
    return picks


def row(
    name: str,
    what: str,
    times: dict[str, float],
    selections: str,
) -> dict[str, Any]:
    """One table row; speed-ups are a peer's time over ours."""
    vs_plain = times["plain"] / times["ours"]
    vs_peer = times["skactiveml"] / times["ours"]
    return {
        "acquisition": name,
        "setting": what,
        "ours_s": round(times["ours"], 3),
        "plain_torch_s": round(times["plain"], 3),
        "skactiveml_s": round(times["skactiveml"], 3),
        "vs_plain_torch": round(vs_plain, 1),
        "vs_skactiveml": round(vs_peer, 1),
        "target": "PASS" if vs_peer >= TARGET and vs_plain >= 1 else "FAIL",
        "selections": selections,
    }


def benchmark(
    s: Setting, repeats: int, log: Callable[[str], None], only: tuple[str, ...] = ALGORITHMS
) -> list[dict[str, Any]]:
    """Every row, in the order of the module docstring; every time measured."""
    data = make_data(s)
    small = make_data(replace(s, pool=s.badge_pool, dim=s.badge_dim))
    pool = {
        "embeddings": torch.from_numpy(data["embeddings"]),
        "labeled_embeddings": torch.from_numpy(data["labeled"]),
        "probs": torch.from_numpy(data["probs"]),
    }
    badge_pool = {
        "embeddings": torch.from_numpy(small["embeddings"]),
        "probs": torch.from_numpy(small["probs"]),
    }
    mc = {"mc_probs": torch.from_numpy(data["mc"])}
    log("warm-up (threads, first allocations)")
    for name, outputs in (("coreset", pool), ("badge", badge_pool), ("batchbald", mc)):
        ours(name, outputs, 3)
    peer_coreset(data, 3)
    plain_coreset(pool["embeddings"], pool["labeled_embeddings"], 3)

    def timed(label: str, runs: dict[str, Callable[[], list[int]]]) -> tuple[dict, dict]:
        times, picks = {}, {}
        for who, fn in runs.items():
            log(f"{label}: {who}")
            times[who], picks[who] = best_time(fn, repeats)
        return times, picks

    rows = []
    if "coreset" in only:
        rows.append(coreset_row(s, data, pool, timed))
    if "badge" in only:
        rows.append(badge_row(s, small, badge_pool, timed))
    if "batchbald" in only:
        rows.append(batchbald_row(s, data, mc, timed))
    return rows


def coreset_row(s: Setting, data: dict, pool: dict, timed: Callable) -> dict[str, Any]:
    times, picks = timed(
        "coreset",
        {
            "ours": lambda: ours("coreset", pool, s.batch),
            "plain": lambda: plain_coreset(pool["embeddings"], pool["labeled_embeddings"], s.batch),
            "skactiveml": lambda: peer_coreset(data, s.batch),
        },
    )
    what = f"pool {s.pool:,} x {s.dim}, {s.labeled:,} labeled, batch {s.batch:,}"
    same = (
        f"vs skactiveml: {agreement(picks['ours'], picks['skactiveml'])}; "
        f"vs plain: {agreement(picks['ours'], picks['plain'])}"
    )
    return row("coreset", what, times, same)


def badge_row(s: Setting, small: dict, badge_pool: dict, timed: Callable) -> dict[str, Any]:
    times, picks = timed(
        "badge",
        {
            "ours": lambda: ours("badge", badge_pool, s.badge_batch),
            "plain": lambda: plain_badge(
                badge_pool["embeddings"], badge_pool["probs"], s.badge_batch
            ),
            "skactiveml": lambda: peer_badge(small, s.badge_batch),
        },
    )
    firsts = {picks[w][0] for w in picks}
    same = "first pick identical" if len(firsts) == 1 else "first picks differ"
    same += " (later picks: draws of different generators)"
    what = f"pool {s.badge_pool:,} x {s.badge_dim}, {s.classes} classes, batch {s.badge_batch}"
    return row("badge", what, times, same)


def batchbald_row(s: Setting, data: dict, mc: dict, timed: Callable) -> dict[str, Any]:
    times, picks = timed(
        "batchbald",
        {
            "ours": lambda: ours("batchbald", mc, s.bb_batch, num_configs=s.bb_configs),
            "plain": lambda: plain_batchbald(mc["mc_probs"], s.bb_batch, s.bb_configs),
            "skactiveml": lambda: peer_batchbald(data, s.bb_batch, s.bb_configs),
        },
    )
    same = (
        f"vs skactiveml: {agreement(picks['ours'], picks['skactiveml'])}; "
        f"vs plain: {agreement(picks['ours'], picks['plain'])}"
    )
    what = (
        f"pool {s.bb_pool:,}, {s.bb_samples} MC samples, {s.classes} classes, "
        f"M = {s.bb_configs:,}, batch {s.bb_batch}"
    )
    return row("batchbald", what, times, same)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as a Markdown table."""
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        cells = [str(r[c]) + ("x" if c.startswith("vs_") else "") for c in columns]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small pool, under a minute")
    parser.add_argument("--repeats", type=int, help="runs per timing, best shown (1; quick 2)")
    parser.add_argument(
        "--threads", type=int, help="threads for torch and the peers' BLAS/OpenMP (default: own)"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--only", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
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
    rows = benchmark(setting, repeats, log, tuple(args.only))
    load = (load_before, os.getloadavg()[0])
    print_table(rows)
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {load[0]:.1f} -> {load[1]:.1f}; vs_* = that peer's s / ours s "
        f"(targets: >= {TARGET:g}x scikit-activeml, >= 1x plain torch); best of {repeats} "
        "run(s), every time measured on the whole batch"
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
