"""SVG snapshots of every TUI screen at 80x24 and 120x40 (pytest-textual-snapshot).

The store is a real SQLite file with fixed data and fixed timestamps, the app's clock is
injected and the local time zone is UTC, so a snapshot only changes when the screen does.
After an intended change: `pytest tests/test_tui_snapshots.py --snapshot-update`, then
look at the SVGs in tests/__snapshots__/test_tui_snapshots/.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from autoplat.core.store import ALRound, Store, StudyState, TrialState
from autoplat.tui.app import PlatformApp
from autoplat.tui.base import HelpScreen
from autoplat.tui.study import StudyScreen

START = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
NOW = START + timedelta(minutes=42, seconds=17)
SIZES = [(80, 24), (120, 40)]
URL = "sqlite:///runs.db"  # relative: the header shows it, the same in every tmp_path

SEARCH_TRIALS = [  # params, state, val_accuracy per epoch (the value: the last one)
    ({"lr": 0.001, "depth": 2, "width": 64}, TrialState.COMPLETE, [0.62, 0.81, 0.88, 0.9]),
    ({"lr": 0.01, "depth": 3, "width": 128}, TrialState.COMPLETE, [0.71, 0.9, 0.96, 0.95]),
    ({"lr": 0.1, "depth": 4, "width": 64}, TrialState.FAIL, [0.3]),
    ({"lr": 0.003, "depth": 3, "width": 256}, TrialState.PRUNED, [0.55, 0.6]),
    ({"lr": 0.005, "depth": 4, "width": 128}, TrialState.RUNNING, [0.68, 0.85]),
    ({"lr": 0.02, "depth": 2, "width": 256}, TrialState.RUNNING, []),
]


def fill(store: Store) -> None:
    """A running search, a finished active-learning study and a curation run."""
    search = store.create_study("qs-search", metric="val_accuracy", target_trials=10)
    for params, state, curve in SEARCH_TRIALS:
        trial = store.start_trial(search.id, params)
        for epoch, value in enumerate(curve, start=1):
            store.add_metrics(trial.id, epoch, {"val_accuracy": value})
        if state is TrialState.FAIL:
            store.finish_trial(trial.id, state, error="RuntimeError: CUDA out of memory")
        elif state is not TrialState.RUNNING:
            store.finish_trial(trial.id, state, value=curve[-1])

    al = store.create_study("digits-al", kind="al", metric="accuracy", target_trials=4)
    for acquisition, gain in (("random", 0.05), ("entropy", 0.08)):
        for seed in range(2):
            for rnd in range(4):
                value = min(0.99, 0.6 + gain * rnd + 0.01 * seed)
                store.add_al_round(
                    ALRound(
                        study_id=al.id,
                        acquisition=acquisition,
                        seed=seed,
                        round=rnd,
                        n_labeled=50 * (rnd + 1),
                        metrics=f'{{"accuracy": {value}}}',
                    )
                )
    store.set_study_state(al.id, StudyState.FINISHED)

    curate = store.create_study("web-curate", kind="curate", metric="kept_fraction")
    for name, kept in (("metaclip", 7120), ("dedup", 9480)):
        trial = store.start_trial(curate.id, {"scorer": name})
        store.add_metrics(trial.id, 0, {"records": 10000, "kept": kept})
        store.set_trial_attrs(
            trial.id, summary={"threshold": 0.9}, run={"records": 10000, "kept": 6840}
        )
    store.add_artifact(curate.id, None, "kept", "out/kept.parquet")


def fix_times(db: Path) -> None:
    """Every timestamp at a fixed moment: studies start at START, trial n a minute later
    each, finished ones last 90 s; the AL study ended at START + 40 min."""
    stamp = "%Y-%m-%d %H:%M:%S.000000"

    def at(minutes: float) -> str:
        return (START + timedelta(minutes=minutes)).replace(tzinfo=None).strftime(stamp)

    with sqlite3.connect(db) as conn:
        conn.execute("update studies set started_at = ?, ended_at = NULL", (at(0),))
        conn.execute("update studies set ended_at = ? where kind = 'al'", (at(40),))
        for tid, number, state in conn.execute("select id, number, state from trials").fetchall():
            ended = None if state == "RUNNING" else at(number + 1.5)
            conn.execute(
                "update trials set started_at = ?, ended_at = ? where id = ?",
                (at(number), ended, tid),
            )
    conn.close()


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")  # the studies screen shows local start times
    time.tzset()
    store = Store(URL)
    fill(store)
    store.engine.dispose()
    fix_times(tmp_path / "runs.db")
    yield tmp_path
    monkeypatch.undo()
    time.tzset()


def app(study: str | None = None) -> PlatformApp:
    return PlatformApp(URL, study=study, interval=3600, clock=lambda: NOW)


async def settled(pilot: Pilot, done) -> None:
    """Wait (at most 10 s) until ``done()`` holds, then for the screen to repaint."""
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "the screen did not load its data in time"
        await pilot.pause(0.02)
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


def has_status(pilot: Pilot, text: str) -> bool:
    status = pilot.app.screen.query("#status")  # empty while a pushed screen composes
    return bool(status) and text in str(status.first().render())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_studies_screen(snap_compare, store_dir: Path, size: tuple[int, int]) -> None:
    async def loaded(pilot: Pilot) -> None:
        table = pilot.app.screen.query_one("#studies", DataTable)
        await settled(pilot, lambda: table.row_count == 3 and has_status(pilot, "3 studies"))

    assert snap_compare(app(), terminal_size=size, run_before=loaded)


def study_loaded(name: str, status: str):
    async def loaded(pilot: Pilot) -> None:
        def ready() -> bool:
            screen = pilot.app.screen
            return (
                isinstance(screen, StudyScreen)
                and screen.study_name == name
                and has_status(pilot, status)
            )

        await settled(pilot, ready)

    return loaded


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_search_study(snap_compare, store_dir: Path, size: tuple[int, int]) -> None:
    loaded = study_loaded("qs-search", "2 running")
    assert snap_compare(app("qs-search"), terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_al_study(snap_compare, store_dir: Path, size: tuple[int, int]) -> None:
    loaded = study_loaded("digits-al", "16 rounds")
    assert snap_compare(app("digits-al"), terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_curate_study(snap_compare, store_dir: Path, size: tuple[int, int]) -> None:
    loaded = study_loaded("web-curate", "10000 records")
    assert snap_compare(app("web-curate"), terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_screen(snap_compare, store_dir: Path, size: tuple[int, int]) -> None:
    loader = study_loaded("qs-search", "2 running")

    async def help_open(pilot: Pilot) -> None:
        await loader(pilot)
        await pilot.press("question_mark")
        await settled(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))

    assert snap_compare(app("qs-search"), terminal_size=size, run_before=help_open)
