"""The TUI driven through Textual's pilot against a real SQLite store filled while it runs."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from autoplat.cli import main
from autoplat.core.store import OBJECTIVES_KEY, SCHEMA_VERSION, ALRound, Store, TrialState
from autoplat.tui.app import PlatformApp, SearchProcess
from autoplat.tui.base import HelpScreen, QuitSearchScreen
from autoplat.tui.data import (
    COLUMNS,
    FRONT_MARK,
    Reader,
    TrialsModel,
    axis,
    parse_filter,
    plural,
    tick_label,
)
from autoplat.tui.launch import detached_command, stop_search
from autoplat.tui.study import ALStudyScreen, CurateStudyScreen, SearchStudyScreen
from autoplat.views import curate_table

POLL = 0.05


def fill(store: Store) -> dict[str, int]:
    """A running study: trial 0 complete, 1 running (one epoch), 2 failed."""
    study = store.create_study("demo", metric="val_accuracy", target_trials=4)
    t0 = store.start_trial(study.id, {"lr": 0.01, "depth": 2})
    store.add_metrics(t0.id, 1, {"val_accuracy": 0.5, "train_loss": 1.0})
    store.add_metrics(t0.id, 2, {"val_accuracy": 0.7, "train_loss": 0.5})
    store.finish_trial(t0.id, TrialState.COMPLETE, value=0.7)
    t1 = store.start_trial(study.id, {"lr": 0.02, "depth": 4})
    store.add_metrics(t1.id, 1, {"val_accuracy": 0.6})
    t2 = store.start_trial(study.id, {"lr": 0.03, "depth": 2})
    store.finish_trial(t2.id, TrialState.FAIL, error="RuntimeError: CUDA out of memory")
    return {"study": study.id, "t1": t1.id}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'runs.db'}")


async def until(pilot: Pilot, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the app did not show the expected state in time"
        await pilot.pause(POLL)


async def study_trials(pilot: Pilot, rows: int) -> DataTable:
    """The study screen's trials table, once it shows ``rows`` trials."""
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, SearchStudyScreen))
    trials = app.screen.query_one("#trials", DataTable)
    await until(pilot, lambda: trials.row_count == rows)
    return trials


def cell(table: DataTable, row: str, column: str) -> str:
    return str(table.get_cell(row, column))


def keys(table: DataTable) -> list[str]:
    return [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]


@pytest.mark.asyncio
async def test_studies_then_trials_update_in_place(store: Store) -> None:
    ids = fill(store)
    app = PlatformApp(store.url, interval=POLL)
    async with app.run_test(size=(120, 36)) as pilot:
        studies = app.screen.query_one("#studies", DataTable)
        await until(pilot, lambda: studies.row_count == 1)
        row = [str(c) for c in studies.get_row("demo")]
        assert row[:7] == ["demo", "search", "running", "1/4", "1", "1", "0.7000"]
        assert app.screen.status_text().startswith("1 study in sqlite:///")

        await pilot.press("enter")
        trials = await study_trials(pilot, 3)
        screen = app.screen
        assert keys(trials) == ["0", "1", "2"]
        assert [cell(trials, "0", c) for c in ("state", "latest", "peak", "epoch")] == [
            "complete",
            "0.7000",
            "0.7000",
            "2",
        ]
        assert cell(trials, "1", "state") == "running"
        assert cell(trials, "0", "params") == "lr=0.01 depth=2"

        # The store changes while the app runs: the same rows update in place.
        store.add_metrics(ids["t1"], 2, {"val_accuracy": 0.9})
        await until(pilot, lambda: cell(trials, "1", "latest") == "0.9000")
        assert cell(trials, "1", "epoch") == "2"
        store.finish_trial(ids["t1"], TrialState.COMPLETE, value=0.9)
        t3 = store.start_trial(ids["study"], {"lr": 0.04, "depth": 2})
        await until(pilot, lambda: trials.row_count == 4)
        assert keys(trials) == ["0", "1", "2", "3"]
        assert cell(trials, "1", "state") == "complete"
        assert cell(trials, "3", "state") == "running"
        details = screen.query_one("#details-text", Static)
        await until(pilot, lambda: "best: trial 1" in str(details.render()))
        assert screen.model.best_so_far() == ([0, 1, 1], [0.7, 0.7, 0.9])

        # The failed trial's error shows when it is highlighted.
        trials.move_cursor(row=trials.get_row_index("2"))
        await until(pilot, lambda: "CUDA out of memory" in str(details.render()))

        # Sorting keeps the keys; s cycles columns (latest: best first for maximize).
        await pilot.press("s")
        assert screen.sort_column == "latest"
        store.add_metrics(t3.id, 1, {"val_accuracy": 0.95})
        await until(pilot, lambda: keys(trials)[0] == "3")
        assert keys(trials) == ["3", "1", "0", "2"]

        await pilot.press("escape")
        await until(pilot, lambda: cell(studies, "demo", "done") == "2/4")


@pytest.mark.asyncio
async def test_filter_by_state(store: Store) -> None:
    fill(store)
    app = PlatformApp(store.url, study="demo", interval=POLL)
    async with app.run_test(size=(100, 30)) as pilot:
        trials = await study_trials(pilot, 3)
        await pilot.press("slash", *"fail", "enter")
        assert keys(trials) == ["2"]
        assert "filter `fail`: 1 shown" in str(app.screen.query_one("#status", Static).render())
        await pilot.press("slash", *"run complete")
        assert keys(trials) == ["0", "1"]
        await pilot.press("escape")  # clears the filter and leaves the box
        assert keys(trials) == ["0", "1", "2"]
        assert isinstance(app.screen, SearchStudyScreen)
        assert app.focused is trials


@pytest.mark.asyncio
async def test_missing_old_and_foreign_databases_recover(tmp_path: Path) -> None:
    path = tmp_path / "later.db"
    app = PlatformApp(f"sqlite:///{path}", interval=POLL)
    async with app.run_test(size=(100, 30)) as pilot:
        status = app.screen.query_one("#status", Static)

        def says(text: str) -> Callable[[], bool]:
            return lambda: text in str(status.render())

        await until(pilot, says("no results store at"))
        assert "retrying" in str(status.render())
        with sqlite3.connect(path) as conn:
            conn.execute("create table other (x int)")
        await until(pilot, says("not a platform database"))
        path.unlink()
        old = Store(f"sqlite:///{path}")
        with sqlite3.connect(path) as conn:
            conn.execute("update schema_version set version = 0")
        await until(pilot, says("schema version 0"))
        with sqlite3.connect(path) as conn:
            conn.execute(f"update schema_version set version = {SCHEMA_VERSION}")
        fill(old)
        studies = app.screen.query_one("#studies", DataTable)
        await until(pilot, lambda: studies.row_count == 1)
        assert not status.has_class("error")


@pytest.mark.asyncio
async def test_small_terminal_help_theme_and_read_only(store: Store, tmp_path: Path) -> None:
    fill(store)
    store.engine.dispose()
    db = tmp_path / "runs.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    app = PlatformApp(store.url, study="demo", interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        trials = await study_trials(pilot, 3)
        screen = app.screen
        await pilot.pause()

        def fits(*selectors: str) -> None:
            for selector in selectors:
                region = screen.query_one(selector).region
                assert region.width > 20 and region.height >= 9, selector

        assert trials.region.height == 4  # header + 3 trials: no blank rows below them
        fits("#trial-plot", "#details")  # one chart at a time below 100 columns
        assert screen.query_one("#trial-plot").border_title == "trial 0: val_accuracy"
        assert not screen.query_one("#best-plot").display
        await pilot.press("c")
        await pilot.pause()
        fits("#best-plot", "#details")
        assert not screen.query_one("#trial-plot").display
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is screen
        dark = app.theme
        await pilot.press("d")
        assert app.theme != dark
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


@pytest.mark.asyncio
async def test_active_learning_study_gets_its_screen(store: Store) -> None:
    study = store.create_study("al-demo", kind="al", metric="accuracy")
    for acq, seeds in (("random", ((0.5, 0.6), (0.5, 0.6))), ("entropy", ((0.5, 0.7), (0.5, 0.9)))):
        for seed, values in enumerate(seeds):
            for rnd, value in enumerate(values):
                store.add_al_round(
                    ALRound(
                        study_id=study.id,
                        acquisition=acq,
                        seed=seed,
                        round=rnd,
                        n_labeled=100 * (rnd + 1),
                        metrics=f'{{"accuracy": {value}}}',
                    )
                )
    app = PlatformApp(store.url, study="al-demo", interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ALStudyScreen))
        rounds = app.screen.query_one("#rounds", DataTable)
        await until(pilot, lambda: rounds.row_count == 8)
        assert cell(rounds, "entropy/1/1", "metric") == "0.9000"
        assert cell(rounds, "entropy/1/1", "labels") == "200"
        # the status line ranks acquisitions by AULC over seeds: entropy (0.5->0.8) wins
        assert "2 acquisitions, 8 rounds, best AULC entropy 0.6500" in app.screen.status_text()


@pytest.mark.asyncio
@pytest.mark.slow
async def test_quit_asks_whether_to_stop_the_search(store: Store, tmp_path: Path) -> None:
    fill(store)
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        watched = SearchProcess(process, tmp_path / "l", "experiments")  # `platform al --tui`
        app = PlatformApp(store.url, interval=POLL, search=watched)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("q")
            assert isinstance(app.screen, QuitSearchScreen)
            question = str(app.screen.query_one("#question", Static).render())
            assert f"The experiments (PID {process.pid}) is still running" in question
            await pilot.press("escape")
            assert not isinstance(app.screen, QuitSearchScreen)
            await pilot.press("q", "s")
        assert app.return_value == "stop"
        assert stop_search(process, wait_s=10) == -signal.SIGINT
    finally:
        process.kill()
        process.wait()


def test_tui_command_help_and_bad_config(capsys, write_config) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tui", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--storage URL" in out and "--study" in out and "--interval SECONDS" in out

    bad = write_config(extra="[bogus]\nx = 1\n")
    assert main(["search", str(bad), "--tui"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["al", str(bad), "--tui"]) == 2  # validated as an active-learning config
    assert "name, seeds, data_seed" in capsys.readouterr().err

    args = argparse.Namespace(config=bad, storage="sqlite:///x.db", address=None, resume=True)
    assert detached_command(args, "al")[2:] == [
        "autoplat.cli", "al", str(bad), "--storage", "sqlite:///x.db", "--resume"
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_curation_study_gets_its_screen(store: Store) -> None:
    study = store.create_study("cur-demo", kind="curate", metric="kept_fraction")
    for name, kept in (("metaclip", 700), ("dedup", 950)):
        trial = store.start_trial(study.id, {"scorer": name})
        store.add_metrics(trial.id, 0, {"records": 1000, "kept": kept})
        store.set_trial_attrs(
            trial.id, summary={"threshold": 0.9}, run={"records": 1000, "kept": 680}
        )
    store.add_artifact(study.id, None, "kept", "/data/out/kept.parquet")
    app = PlatformApp(store.url, study="cur-demo", interval=POLL)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CurateStudyScreen))
        await until(pilot, lambda: "1000 records" in app.screen.status_text())
        assert "running" in app.screen.status_text()
    # the screen shows the table `platform show` prints, read through the TUI's reader
    console = Console(width=100, record=True)
    summary, artifacts = Reader(store.url).curation(store.get_study("cur-demo"))
    console.print(curate_table(summary, artifacts))
    table = console.export_text()
    assert "metaclip" in table and "70.0" in table and "95.0" in table
    assert "all" in table and "68.0" in table and "kept.parquet" in table


OBJECTIVES = [["val_accuracy", "maximize"], ["model_params", "minimize"]]


def fill_two_objectives(store: Store) -> dict[str, int]:
    """A running two-objective study: trials 0-2 complete (2 dominated by 0), 3 running,
    4 failed. Each trial's objectives are its latest reported metrics."""
    study = store.create_study(
        "mo",
        metric="val_accuracy",
        target_trials=6,
        config=json.dumps({OBJECTIVES_KEY: OBJECTIVES}),
    )
    ids = {"study": study.id}
    for acc, size in ((0.7, 1000), (0.9, 5000), (0.6, 2000)):
        trial = store.start_trial(study.id, {"width": size})
        store.add_metrics(trial.id, 1, {"val_accuracy": acc - 0.1, "model_params": 2 * size})
        store.add_metrics(trial.id, 2, {"val_accuracy": acc, "model_params": size})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=acc)
    running = store.start_trial(study.id, {"width": 800})
    store.add_metrics(running.id, 1, {"val_accuracy": 0.75, "model_params": 800})
    failed = store.start_trial(study.id, {"width": 9000})
    store.finish_trial(failed.id, TrialState.FAIL, error="RuntimeError: boom")
    ids["running"] = running.id
    return ids


def marked(table: DataTable) -> set[int]:
    return {int(k) for k in keys(table) if cell(table, k, "front") == FRONT_MARK}


@pytest.mark.asyncio
async def test_pareto_front_marked_live_and_absent_for_one_objective(store: Store) -> None:
    ids = fill_two_objectives(store)
    fill(store)  # "demo": a single-objective study in the same store
    app = PlatformApp(store.url, study="mo", interval=POLL)
    async with app.run_test(size=(120, 36)) as pilot:
        trials = await study_trials(pilot, 5)
        screen = app.screen
        assert [str(c.label) for c in trials.columns.values()][:6] == [
            "#",
            "front",
            "state",
            "latest",
            "peak",
            "model_params",
        ]
        assert marked(trials) == {0, 1}  # 2 is dominated by 0; 3 runs; 4 failed
        assert cell(trials, "2", "objective:model_params") == "2000"
        assert "val_accuracy (max), model_params (min)" in screen.status_text()
        assert "2 on the Pareto front" in screen.status_text()
        details = screen.query_one("#details-text", Static)
        assert "Pareto front: 2 trials" in str(details.render())

        # Trial 3 finishes beating trial 0 on both objectives: 0 leaves, 3 joins.
        store.add_metrics(ids["running"], 2, {"val_accuracy": 0.8, "model_params": 800})
        store.finish_trial(ids["running"], TrialState.COMPLETE, value=0.8)
        await until(pilot, lambda: marked(trials) == {1, 3})
        summary = store.summary(store.get_study("mo"))
        assert set(summary["pareto_front"]) == {1, 3}
        assert screen.model.front == summary["pareto_front"]  # by the first objective
        await until(pilot, lambda: "trial 3: 0.8  800" in str(details.render()))

        await pilot.press("escape")
        studies = app.screen.query_one("#studies", DataTable)
        await until(pilot, lambda: studies.row_count == 2)
        studies.move_cursor(row=studies.get_row_index("demo"))
        await pilot.press("enter")
        await until(pilot, lambda: getattr(app.screen, "study_name", "") == "demo")
        single = app.screen.query_one("#trials", DataTable)
        await until(pilot, lambda: single.row_count == 3)
        assert tuple(str(k.value) for k in single.columns) == COLUMNS
        cells = [str(c) for k in keys(single) for c in single.get_row(k)]
        assert FRONT_MARK not in "".join(cells)
        status = app.screen.status_text()
        assert status.startswith("val_accuracy (max) · ") and "Pareto" not in status
        assert "Pareto" not in str(app.screen.query_one("#details-text", Static).render())


def test_front_kept_incrementally_matches_show(store: Store) -> None:
    """Polls while trials start, finish, fail and vanish: the model's front and marks are
    always the front `platform show` computes from the same store."""
    objectives = [["acc", "maximize"], ["size", "minimize"], ["latency", "minimize"]]
    config = json.dumps({OBJECTIVES_KEY: objectives})
    study = store.create_study("mo3", metric="acc", config=config)
    model = TrialsModel(store.get_study("mo3"))
    reader = Reader(store.url)
    rng = random.Random(0)
    running: list[int] = []
    for _ in range(12):
        for _ in range(3):
            running.append(store.start_trial(study.id, {"w": rng.random()}).id)
        rng.shuffle(running)
        for tid in running[:2]:
            values = {"acc": rng.random(), "size": rng.randint(1, 9), "latency": rng.random()}
            store.add_metrics(tid, 1, values)
            ok = rng.random() < 0.8
            state = TrialState.COMPLETE if ok else TrialState.FAIL
            store.finish_trial(tid, state, value=values["acc"])
        del running[:2]
        if rng.random() < 0.3:  # a complete trial is deleted from the store by hand
            with sqlite3.connect(store.url.removeprefix("sqlite:///")) as conn:
                (gone,) = conn.execute("select min(id) from trials where state = 'COMPLETE'")
                conn.execute("delete from trial_metrics where trial_id = ?", gone)
                conn.execute("delete from trials where id = ?", gone)
        model.poll(reader)
        expected = store.summary(store.get_study("mo3"))["pareto_front"]
        assert model.front == expected
        front = model.columns.index("front")
        assert {n for n, cells in model.cells.items() if cells[front]} == set(expected)
    assert len(model.front) > 3
    reader.close()


@pytest.mark.asyncio
async def test_filter_by_params_and_state_with_hints(store: Store) -> None:
    fill(store)  # trial 0: lr 0.01 depth 2 complete; 1: 0.02, 4 running; 2: 0.03, 2 failed
    app = PlatformApp(store.url, study="demo", interval=POLL)
    async with app.run_test(size=(100, 30)) as pilot:
        trials = await study_trials(pilot, 3)
        screen = app.screen
        box = screen.query_one("#filter")

        async def typed(text: str) -> list[str]:
            box.value = text  # as typed: each change re-filters
            await pilot.pause()
            return keys(trials)

        await pilot.press("slash", *"depth=2")
        assert app.focused is box and keys(trials) == ["0", "2"]
        assert await typed("lr < 0.015") == ["0"]  # spaces around the operator are fine
        assert await typed("depth>=2 fail") == ["2"]
        assert await typed("depth!=2") == ["1"]
        assert await typed("lr=1e-2") == ["0"]  # numbers compare as numbers
        assert "filter `lr=1e-2`: 1 shown" in screen.status_text()

        assert await typed("depth=3") == []
        hint = "no trial matches `depth=3` (params: lr, depth); Esc clears the filter"
        assert hint in screen.status_text() and box.border_title == hint
        assert await typed("dept=3") == []
        assert "no trial has a param dept (params: lr, depth)" in screen.status_text()
        assert await typed("deep") == []  # not a state or condition: the last filter stays
        assert "'deep' is no state or condition; filter by states" in screen.status_text()

        await pilot.press("escape")
        assert keys(trials) == ["0", "1", "2"] and not screen.filter_hint


def test_parse_filter_words() -> None:
    assert parse_filter("  ") is None
    f = parse_filter("run, c opt = adam lr<=1e-3")
    assert f.states == {"running", "complete"}
    assert f.conditions == (("opt", "=", "adam"), ("lr", "<=", "1e-3"))
    with pytest.raises(ValueError, match="'x1' is no state or condition"):
        parse_filter("complete x1")


@pytest.mark.asyncio
async def test_columns_widen_as_values_arrive(store: Store) -> None:
    """A column sized at the first paint ("run", blank "latest") widens for "complete"
    and 0.9600, header included."""
    study = store.create_study("live", metric="val_accuracy")
    trial = store.start_trial(study.id, {"lr": 0.1})
    app = PlatformApp(store.url, study="live", interval=POLL)
    async with app.run_test(size=(120, 30)) as pilot:
        trials = await study_trials(pilot, 1)
        await pilot.pause()
        store.add_metrics(trial.id, 1, {"val_accuracy": 0.96})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=0.96)
        await until(pilot, lambda: cell(trials, "0", "state") == "complete")
        await pilot.pause()
        await pilot.pause()
        assert trials.columns["state"].content_width >= len("complete")
        assert trials.columns["latest"].content_width >= len("0.9600")
        header, row = ("".join(s.text for s in trials.render_line(y)) for y in (0, 1))
        assert "complete" in row and row.index("0.9600") == header.index("latest")


@pytest.mark.parametrize(
    ("values", "ticks"),
    [
        ([0.49, 0.5, 0.52], [0.49, 0.5, 0.51, 0.52]),  # an accuracy line: no 0.49-1.47
        ([0.95, 0.96, 0.97], [0.95, 0.955, 0.96, 0.965, 0.97]),
        ([0.9], [0.85, 0.875, 0.9, 0.925, 0.95]),  # a flat line gets a margin
        ([1.0], [0.94, 0.96, 0.98, 1.0]),  # ... inside [0, 1]
        ([120.0, 2980.0], [0.0, 1000.0, 2000.0, 3000.0]),
    ],
)
def test_chart_axes_fit_the_data(values: list[float], ticks: list[float]) -> None:
    assert axis(values) == pytest.approx(ticks)
    assert axis([1, 2], whole=True) == [1, 2]  # epochs: whole ticks, never 1.25
    assert axis([0, 5, 9], whole=True) == [0, 5, 10]
    assert [tick_label(t, [0.95, 0.955]) for t in (0.95, 0.955)] == ["0.950", "0.955"]
    assert tick_label(2000.0, [0.0, 1000.0]) == "2000"


def test_plural() -> None:
    assert [plural(1, "study"), plural(3, "study"), plural(1, "round"), plural(0, "round")] == [
        "1 study",
        "3 studies",
        "1 round",
        "0 rounds",
    ]


def test_al_screen_says_which_file_a_person_must_label(tmp_path):
    """With `al --tui` the run's output goes to a log: the TUI is where a person sees it."""
    url = f"sqlite:///{tmp_path}/al.db"
    store = Store(url)
    study = store.create_study("labels", kind="al")
    waiting = store.start_trial(study.id, {"acquisition": "margin", "seed": 0})
    wanted = {"round": 1, "ids": 10, "query": "/runs/q/margin-seed0-round001.query.csv"}
    store.set_trial_attrs(waiting.id, labels_wanted=wanted)
    done = store.start_trial(study.id, {"acquisition": "margin", "seed": 1})
    store.set_trial_attrs(done.id, labels_wanted=None)
    assert Reader(url).labels_wanted(study.id) == [wanted]
    screen = ALStudyScreen("labels")
    screen._wanted = [wanted]
    assert screen.status_text() == (
        "waiting for 10 labels: /runs/q/margin-seed0-round001.query.csv"
    )
    store.finish_trial(waiting.id, TrialState.COMPLETE, 0.9)
    assert Reader(url).labels_wanted(study.id) == []
