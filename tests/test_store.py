"""The store on SQLite and PostgreSQL: schema, settings, trial events, summaries, bad
databases, migrations, the CLI reading a server."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from autoplat.cli import main
from autoplat.core.database import ARTIFACTS, METRICS, STUDIES, TRIALS, Database
from autoplat.core.errors import StoreError
from autoplat.core.store import SCHEMA_VERSION, ALRound, Store, StudyState, TrialState
from autoplat.testing import run_platform


def test_sqlite_settings_and_tables(tmp_path):
    db = tmp_path / "runs" / "p.db"
    Store(f"sqlite:///{db}")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "studies",
        "trials",
        "trial_metrics",
        "al_rounds",
        "artifacts",
        "schema_version",
    } <= tables
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_trial_lifecycle_and_summary(store_url):
    store = Store(store_url)
    study = store.create_study("s", direction="maximize", metric="val_accuracy", target_trials=3)
    a = store.start_trial(study.id, {"depth": 2})
    b = store.start_trial(study.id, {"depth": 4})
    c = store.start_trial(study.id, {"depth": 6})
    assert (a.number, b.number, c.number) == (0, 1, 2)
    store.add_metrics(a.id, 1, {"val_accuracy": 0.5})
    store.add_metrics(a.id, 2, {"val_accuracy": 0.8, "test_accuracy": 0.79})
    store.add_metrics(a.id, 2, {"val_accuracy": 0.81})  # same (trial, step, name): updated
    store.finish_trial(a.id, TrialState.COMPLETE, value=0.81)
    store.add_metrics(b.id, 1, {"val_accuracy": 0.9})
    store.finish_trial(b.id, TrialState.FAIL, error="TrialFailed: loss became NaN at epoch 1")
    assert store.interrupt_running(study.id) == 1
    summary = Store(store_url, create=False).summary(store.get_study("s"))
    assert summary["study"]["trial_counts"] == {
        "running": 0,
        "complete": 1,
        "pruned": 0,
        "fail": 1,
        "interrupted": 1,
    }
    assert summary["best"]["number"] == 0
    assert summary["best"]["metrics"] == {"val_accuracy": 0.81, "test_accuracy": 0.79}
    assert summary["trials"][1]["error"].startswith("TrialFailed")
    assert store.metrics(a.id) == {
        1: {"val_accuracy": 0.5},
        2: {"val_accuracy": 0.81, "test_accuracy": 0.79},
    }
    reader = Database(store_url)  # Core only, as `platform runs` and `show` read
    assert reader.summary(reader.read_study("s")) == summary
    assert [row.name for row in reader.study_rows()] == ["s"]
    with pytest.raises(StoreError, match="no study named 'x' .* Studies: s"):
        reader.read_study("x")


def test_the_readers_columns_are_the_stores():
    """database.py's light tables name columns of the SQLModel tables, of the same types."""
    for light in (STUDIES, TRIALS, METRICS, ARTIFACTS):
        full = SQLModel.metadata.tables[light.name]
        for col in light.columns:
            assert col.name in full.columns, f"{light.name}.{col.name}"
            assert col.type._type_affinity is full.columns[col.name].type._type_affinity


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.write_text("not a database at all" * 100), "cannot open the results store"),
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE x (a)").connection.commit(),
            "not a platform database",
        ),
    ],
)
def test_bad_databases_give_clear_errors(tmp_path, setup, message):
    path = tmp_path / "bad.db"
    setup(path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=message):
        Store(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_old_schema_and_missing_and_bad_url(store_url, tmp_path):
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 0")
    with pytest.raises(StoreError, match="schema version 0"):
        Store(store_url)
    with pytest.raises(StoreError, match="no results store"):
        Store(f"sqlite:///{tmp_path}/missing.db", create=False)
    with pytest.raises(StoreError, match="not a valid SQLAlchemy URL"):
        Store("nonsense-url")
    with pytest.raises(StoreError, match="no study named 'x'"):
        store.get_study("x")


def test_studies_rounds_artifacts_and_attrs(store_url):
    store = Store(store_url)
    study = store.create_study("al", kind="al", target_trials=2)
    trial = store.start_trial(study.id, {"acquisition": "entropy"})
    store.set_trial_attrs(trial.id, rounds=2)
    store.set_trial_attrs(trial.id, seed=0)
    store.set_trial_node(trial.id, "node-a")
    for round_, n in ((0, 10), (1, 20), (1, 25)):  # round 1 stored twice: replaced
        store.add_al_round(
            ALRound(
                study_id=study.id,
                trial_id=trial.id,
                acquisition="entropy",
                round=round_,
                n_labeled=n,
                metrics=json.dumps({"acc": n / 100}),
            )
        )
    ckpt = store.add_artifact(study.id, trial.id, "checkpoint", "/x/ckpt.pt")
    store.add_artifact(study.id, None, "report", "/x/report.json")
    store.set_study_state(study.id, StudyState.FINISHED)

    reader = Store(store_url, create=False)
    again = reader.get_study("al")
    assert again.state == StudyState.FINISHED and again.ended_at >= again.started_at
    assert [(r.round, r.n_labeled) for r in reader.al_rounds(study.id)] == [(0, 10), (1, 25)]
    assert reader.trials(study.id)[0].attrs_dict == {"rounds": 2, "seed": 0}
    assert reader.trials(study.id)[0].node == "node-a"
    assert [a.kind for a in reader.artifacts(study.id)] == ["checkpoint", "report"]
    assert [a.path for a in reader.artifacts(study.id, trial_id=trial.id)] == ["/x/ckpt.pt"]
    store.delete_artifact(ckpt.id)
    assert [a.kind for a in reader.artifacts(study.id)] == ["report"]
    assert [s.name for s in reader.studies()] == ["al"]


def test_schema_1_is_migrated_and_leases_added(store_url):
    """A version-1 store (no trials.attrs, no driver_leases) opened for writing is upgraded;
    a reader leaves it as it is."""
    store = Store(store_url)
    store.create_study("old")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE trials DROP COLUMN attrs")
        conn.exec_driver_sql("DROP TABLE driver_leases")
        conn.exec_driver_sql("UPDATE schema_version SET version = 1")
    store.engine.dispose()
    with pytest.raises(StoreError, match="schema version 1"):
        Store(store_url, create=False)
    assert "driver_leases" not in inspect(store.engine).get_table_names()
    upgraded = Store(store_url)
    study = upgraded.get_study("old")
    trial = upgraded.start_trial(study.id, {})
    upgraded.set_trial_attrs(trial.id, ok=True)
    assert upgraded.trials(study.id)[0].attrs_dict == {"ok": True}
    assert upgraded.acquire_lease(study.id)


def test_a_schema_2_file_gains_the_lease_table(tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    Store(url).create_study("s")
    sqlite3.connect(tmp_path / "p.db").execute("DROP TABLE driver_leases").connection.commit()
    Store(url, create=False).get_study("s")  # a reader does not write
    tables = "SELECT name FROM sqlite_master WHERE type='table'"
    assert "driver_leases" not in {r[0] for r in sqlite3.connect(tmp_path / "p.db").execute(tables)}
    store = Store(url)
    assert store.acquire_lease(store.get_study("s").id)


@pytest.mark.slow
def test_cli_reads_a_postgres_store(pg_url, capsys):
    """`platform runs` and `show` on a server URL; a plain postgresql:// URL uses psycopg."""
    store = Store(pg_url)
    study = store.create_study("team", target_trials=1)
    trial = store.start_trial(study.id, {"depth": 2})
    store.add_metrics(trial.id, 1, {"val_accuracy": 0.75})
    store.finish_trial(trial.id, TrialState.COMPLETE, value=0.75)
    store.set_study_state(study.id, StudyState.FINISHED)
    plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    hidden = make_url(plain).render_as_string(hide_password=True)

    show = run_platform("show", "team", "--storage", plain, timeout=120, COLUMNS="200")
    assert show.returncode == 0, show.stderr
    assert "team" in show.stdout and "0.75" in show.stdout
    assert main(["runs", "--json", "--storage", plain]) == 0
    runs = capsys.readouterr().out
    assert [(s["name"], s["state"], s["best"]) for s in json.loads(runs)] == [
        ("team", "finished", 0.75)
    ]
    assert f":{make_url(plain).password}@" not in runs + show.stdout
    assert main(["show", "nope", "--storage", plain]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: no study named 'nope' in {hidden}. Studies: team"
    )


@pytest.mark.asyncio
async def test_the_tui_reads_a_postgres_store(pg_url):
    """`platform tui --storage postgresql://...`: the real app lists the study, opens it and
    shows its trials."""
    from textual.widgets import DataTable

    from autoplat.tui.app import PlatformApp

    store = Store(pg_url)
    study = store.create_study("team", target_trials=2)
    for number, value in enumerate((0.5, 0.75)):
        trial = store.start_trial(study.id, {"depth": number + 1})
        store.add_metrics(trial.id, 1, {"val_accuracy": value})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=value)
    app = PlatformApp(pg_url, interval=0.05)
    async with app.run_test(size=(120, 36)) as pilot:
        studies = app.screen.query_one("#studies", DataTable)
        for _ in range(200):
            if studies.row_count == 1:
                break
            await pilot.pause(0.05)
        assert [str(c) for c in studies.get_row("team")][:4] == ["team", "search", "running", "2/2"]
        await pilot.press("enter")
        for _ in range(200):
            trials = app.screen.query("#trials")
            if trials and trials.first(DataTable).row_count == 2:
                break
            await pilot.pause(0.05)
        assert trials.first(DataTable).row_count == 2
