"""Time one refresh of `platform tui`'s study screen on a study with 10,000 trials.

A SQLite store gets a search study of ``--trials`` trials (3 epochs x 3 metrics each; a
few running, a few failed). The real app opens on it (Textual's ``run_test``), then each
round the store changes the way a live search does in a second (every running trial
reports an epoch, one finishes, one starts) and these are timed on the UI loop:

- ``diff refresh``: what the app does each poll: read (narrow rows for every trial, full
  rows only for new, running and changed ones), diff by row key, ``update_cell``/``add_row``.
- ``diff refresh, no change``: the same poll when nothing changed (an idle study).
- ``full reload + rebuild`` (the reference every ratio is taken against): read every trial
  and curve afresh, then ``DataTable.clear()`` and ``add_rows`` of the whole table.
- ``clear + add_rows only``: the table part of the reference alone (cells precomputed).

Each timing starts on a settled app (``pilot.pause()``) and ends when the calls return;
the repaint that follows is not timed (Textual draws only the visible rows, whatever the
table's size), headless at 120x40.
Each round is timed ``--repeats`` times, interleaved; the table shows the best (lowest)
and the median. Usage::

    python benchmarks/tui_refresh.py            # 10,000 trials, 5 rounds
    python benchmarks/tui_refresh.py --quick    # 1,000 trials, 3 rounds, < 1 minute
    python benchmarks/tui_refresh.py --json tui_refresh.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("AUTOPLAT_BUILTIN_ONLY", "1")

TARGET_S = 0.1  # a refresh under this is not felt next to a keypress
METRIC = "val_accuracy"
EPOCHS = 3
RUNNING = 8
REFERENCE = "full reload + rebuild"


def build_store(path: Path, trials: int) -> tuple[Any, int]:
    """A study of ``trials`` trials written in bulk (the Store API's tables, one commit)."""
    from sqlalchemy import insert

    from autoplat.core.store import Store, Trial, TrialMetric, TrialState

    store = Store(f"sqlite:///{path}")
    study = store.create_study("bench", metric=METRIC, target_trials=trials + 100)
    start = datetime.now(UTC) - timedelta(hours=3)
    rows = []
    for n in range(trials):
        running = n >= trials - RUNNING
        failed = not running and n % 97 == 13
        state = TrialState.COMPLETE
        if running or failed:
            state = TrialState.RUNNING if running else TrialState.FAIL
        rows.append(
            {
                "id": n + 1,
                "study_id": study.id,
                "number": n,
                "state": state,
                "params": json.dumps({"depth": 1 + n % 4, "width": 16 * (1 + n % 8), "lr": 1e-3}),
                "value": None if running or failed else (n * 7919 % 1000) / 1000,
                "started_at": start + timedelta(seconds=n),
                "ended_at": None if running else start + timedelta(seconds=n + 30),
                "error": "RuntimeError: CUDA out of memory" if failed else None,
            }
        )
    metrics = [
        {"trial_id": n + 1, "step": step, "name": name, "value": (n * step % 100) / 100}
        for n in range(trials)
        for step in range(1, EPOCHS + 1)
        for name in (METRIC, "val_loss", "train_loss")
    ]
    with store.session() as s:
        s.execute(insert(Trial), rows)
        s.execute(insert(TrialMetric), metrics)
        s.commit()
    return store, study.id


def tick(store: Any, study_id: int, round_: int) -> None:
    """One second of a live search: running trials report, one finishes, one starts."""
    from autoplat.core.store import TrialState

    running = [t for t in store.trials(study_id)[-3 * RUNNING :] if t.state == TrialState.RUNNING]
    for t in running:
        store.add_metrics(t.id, EPOCHS + 1 + round_, {METRIC: 0.5 + round_ / 100})
    store.finish_trial(running[0].id, TrialState.COMPLETE, value=0.99)
    store.start_trial(study_id, {"depth": 2, "width": 32, "lr": 1e-3})


async def measure(url: str, store: Any, study_id: int, repeats: int) -> dict[str, list[float]]:
    from textual.widgets import DataTable

    from autoplat.core.store import Study
    from autoplat.tui.app import PlatformApp
    from autoplat.tui.data import COLUMNS, TrialsModel
    from autoplat.tui.study import SearchStudyScreen

    times: dict[str, list[float]] = {name: [] for name in NAMES}
    app = PlatformApp(url, study="bench", interval=3600)  # only the timed refreshes poll
    started = time.perf_counter()  # run_test returns once the app is up: time from before
    deadline = started + 600
    async with app.run_test(size=(120, 40)) as pilot:
        while not (
            isinstance(app.screen, SearchStudyScreen)
            and app.screen.model is not None
            and app.screen.query_one("#trials", DataTable).row_count
        ):
            assert time.perf_counter() < deadline, "the study screen never filled"
            await pilot.pause(0.01)
        times["first load (open the screen)"].append(time.perf_counter() - started)
        screen = app.screen
        ref = DataTable(id="reference")
        await screen.mount(ref)
        for column in COLUMNS:
            ref.add_column(column, key=column)
        study = store.find_study("bench")
        assert isinstance(study, Study)
        for round_ in range(repeats):
            await asyncio.to_thread(tick, store, study_id, round_)
            async with timed(pilot, times["diff refresh"]):
                await screen.refresh_once()
            assert screen.error is None, screen.error
            async with timed(pilot, times["diff refresh, no change"]):
                await screen.refresh_once()
            async with timed(pilot, times[REFERENCE]):
                model = TrialsModel(study)
                await asyncio.to_thread(model.poll, app.reader)
                rows = [model.cells[n] for n in sorted(model.cells)]
                ref.clear()
                ref.add_rows(rows)
            async with timed(pilot, times["clear + add_rows only"]):
                ref.clear()
                ref.add_rows(rows)
        table = screen.query_one("#trials", DataTable)
        assert table.row_count == ref.row_count == len(model.cells), "tables disagree"
    return times


@contextlib.asynccontextmanager
async def timed(pilot: Any, into: list[float]) -> AsyncIterator[None]:
    """Time a block on the UI loop, started once the app has settled (the previous block's
    repaint is not counted against this one)."""
    await pilot.pause()
    start = time.perf_counter()
    yield
    into.append(time.perf_counter() - start)


NAMES = (
    "diff refresh",
    "diff refresh, no change",
    REFERENCE,
    "clear + add_rows only",
    "first load (open the screen)",
)


def summarize(times: dict[str, list[float]]) -> list[dict[str, Any]]:
    rows = [
        {
            "name": name,
            "runs_s": [round(s, 5) for s in runs],
            "best_s": round(min(runs), 5),
            "median_s": round(statistics.median(runs), 5),
        }
        for name, runs in times.items()
    ]
    reference = next(r for r in rows if r["name"] == REFERENCE)
    for row in rows:
        row["ratio_to_full_rebuild"] = round(row["best_s"] / reference["best_s"], 4)
    return rows


def print_table(rows: list[dict[str, Any]], trials: int, repeats: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"One refresh of the study screen, {trials:,} trials (best of {repeats} rounds)",
        caption=f"ratio: best time / {REFERENCE}'s",
    )
    for column in ("refresh", "best ms", "median ms", "ratio"):
        table.add_column(column, justify="left" if column == "refresh" else "right")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['best_s'] * 1000:.1f}",
            f"{row['median_s'] * 1000:.1f}",
            f"{row['ratio_to_full_rebuild']:.3f}x",
        )
    console = Console(width=None if sys.stdout.isatty() else 100)
    console.print(table)
    diff = rows[0]
    verdict = "PASS" if diff["best_s"] <= TARGET_S else "FAIL"
    console.print(
        f"diff refresh = {diff['best_s'] * 1000:.1f} ms at {trials:,} trials "
        f"(target <= {TARGET_S * 1000:.0f} ms): {verdict}; "
        f"{1 / diff['ratio_to_full_rebuild']:.1f}x faster than a full rebuild"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 trials, 3 rounds")
    parser.add_argument("--trials", type=int, help="trials in the study (default 10,000)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 5; quick 3)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    trials = args.trials or (1_000 if args.quick else 10_000)
    repeats = args.repeats or (3 if args.quick else 5)
    started = time.perf_counter()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="autoplat-tui-") as scratch:
        path = Path(scratch) / "bench.db"
        t0 = time.perf_counter()
        store, study_id = build_store(path, trials)
        say(f"store with {trials:,} trials built in {time.perf_counter() - t0:.1f} s (uncounted)")
        times = asyncio.run(measure(store.url, store, study_id, repeats))
        store.engine.dispose()
    rows = summarize(times)
    print_table(rows, trials, repeats)
    if args.json:
        import textual

        payload = {
            "benchmark": "tui_refresh",
            "trials": trials,
            "repeats": repeats,
            "statistic": "best (lowest) of the rounds; median alongside",
            "target_s": TARGET_S,
            "cpus": os.cpu_count(),
            "textual": textual.__version__,
            "python": sys.version.split()[0],
            "wall_s": round(time.perf_counter() - started, 1),
            "refreshes": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
