"""`platform av-superb STUDY`: the AV-SUPERB-style table of an ``av-superb`` search.

As the benchmark (Tseng et al. 2024) lays its results out, each row is a representation
(a trial's frozen upstream) with one input modality (audio-only, visual-only or fused
audio-visual), each column a task with the row's score and its rank among the rows;
rows are ordered by their mean rank over the tasks (ties: the higher mean score first).
Light: imports no torch; the store is imported on run.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.errors import AutoplatError
from autoplat.core.hookspecs import Command

ARCHITECTURE = "av-superb"
TASKS = {"scene": "acc", "event": "map", "corr": "acc"}  # task -> its measure
MODALITIES = ("audio", "visual", "fused")
# the score of a probe that guesses: 1 of 4 scenes; each of 4 events heard with p = 3/8
# (1 or 2 events per clip), the mAP of random scores; matched vs mismatched pairs, balanced
CHANCE = {"scene": 0.25, "event": 0.375, "corr": 0.5}
SCORE = "superb_score"  # per trial: the mean over tasks of its own modality's score
SHOWN_PARAMS = ("modality", "objective", "fusion", "depth", "width", "probe")


def metric(split: str, task: str, modality: str) -> str:
    """A trial metric's name, e.g. ``test_scene_acc_fused``."""
    return f"{split}_{task}_{TASKS[task]}_{modality}"


def varying(params: list[dict[str, Any]]) -> list[str]:
    """The ``SHOWN_PARAMS`` that differ between trials (modality and objective always)."""
    return [
        key
        for key in SHOWN_PARAMS
        if key in ("modality", "objective") or len({json.dumps(p.get(key)) for p in params}) > 1
    ]


def suite_rows(summary: dict[str, Any], split: str = "test") -> list[dict[str, Any]]:
    """One row per (completed trial, modality it was probed with): its task scores, each
    task's rank among the rows (1 = best; equal scores share a rank), mean score, mean
    rank; ordered by mean rank."""
    rows = []
    shown = varying([t["params"] for t in summary["trials"] if t["state"] == "complete"])
    for trial in summary["trials"]:
        if trial["state"] != "complete":
            continue
        for modality in MODALITIES:
            scores = {task: trial["metrics"].get(metric(split, task, modality)) for task in TASKS}
            if any(value is None for value in scores.values()):
                continue
            upstream = {k: trial["params"][k] for k in shown if k in trial["params"]}
            rows.append(
                {"trial": trial["number"], "upstream": upstream, "modality": modality}
                | {"scores": scores, "mean_score": sum(scores.values()) / len(scores)}
            )
    for task in TASKS:
        for row in rows:
            row.setdefault("ranks", {})[task] = 1 + sum(
                other["scores"][task] > row["scores"][task] for other in rows
            )
    for row in rows:
        row["mean_rank"] = sum(row["ranks"].values()) / len(TASKS)
    rows.sort(key=lambda r: (r["mean_rank"], -r["mean_score"], r["trial"]))
    for place, row in enumerate(rows, 1):
        row["rank"] = place
    return rows


def suite_table(name: str, rows: list[dict[str, Any]], split: str) -> Table:
    """The rows of ``suite_rows`` as a rich table."""
    table = Table(title=f"AV-SUPERB-style suite · study '{name}' · probe {split} scores")
    for column in ("rank", "trial", "upstream", "modality"):
        table.add_column(column, overflow="fold")
    for task, measure in TASKS.items():
        table.add_column(f"{task} {measure} (rank)", justify="right")
    table.add_column("mean score", justify="right")
    table.add_column("mean rank", justify="right")
    for row in rows:
        upstream = " ".join(f"{k}={v}" for k, v in row["upstream"].items())
        cells = [f"{row['scores'][t]:.3f} ({row['ranks'][t]})" for t in TASKS]
        table.add_row(
            str(row["rank"]), str(row["trial"]), upstream, row["modality"], *cells,
            f"{row['mean_score']:.3f}", f"{row['mean_rank']:.2f}",
        )  # fmt: skip
    chance = ", ".join(f"{task} {value}" for task, value in CHANCE.items())
    table.caption = f"chance: {chance}"
    return table


def load_rows(storage: str, name: str, split: str) -> list[dict[str, Any]]:
    """The suite rows of study ``name`` in the store at ``storage``.

    Raises:
        StoreError: No store there, or no study of that name.
        AutoplatError: The study is not an av-superb search, or no trial has finished.
    """
    from autoplat.core.store import Store

    store = Store(storage, create=False)
    study = store.get_study(name)
    config = json.loads(study.config or "{}")
    architecture = (config.get("architecture") or {}).get("name")
    if architecture != ARCHITECTURE:
        raise AutoplatError(
            f"study '{name}' searched architecture '{architecture}', not '{ARCHITECTURE}'; "
            f'pass a study whose config has [architecture] name = "{ARCHITECTURE}"'
        )
    rows = suite_rows(store.summary(study), split)
    if not rows:
        raise AutoplatError(
            f"study '{name}' has no completed trial with {split} probe scores yet; "
            f"wait for a trial to finish, or run `platform search` on it again with --resume"
        )
    return rows


def run(args: argparse.Namespace) -> int:
    rows = load_rows(args.storage or DEFAULT_URL, args.study, args.split)
    out = Console(highlight=False, soft_wrap=True)
    if args.json:
        out.print(json.dumps(rows, indent=2), markup=False)
    else:
        out.print(suite_table(args.study, rows, args.split))
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help=f"a search study of architecture {ARCHITECTURE}")
    p.add_argument(
        "--storage",
        metavar="URL",
        help=f"SQLAlchemy URL of the results store (default {DEFAULT_URL})",
    )
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="probe test scores (default) or the dev scores the search ranked by",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


AV_SUPERB = Command(
    "av-superb",
    "AV-SUPERB-style table: each representation x modality scored and ranked per task",
    "platform av-superb av-superb-suite --storage sqlite:////tmp/av/platform.db",
    arguments,
    run,
)
