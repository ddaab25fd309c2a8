"""The SQLite store: schema, settings, trial events, summaries, bad databases."""

from __future__ import annotations

import sqlite3

import pytest

from autoplat.core.errors import StoreError
from autoplat.core.store import SCHEMA_VERSION, Store, TrialState


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


def test_trial_lifecycle_and_summary(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/p.db")
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
    summary = Store(f"sqlite:///{tmp_path}/p.db", create=False).summary(store.get_study("s"))
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


def test_old_schema_and_missing_and_bad_url(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/old.db")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 0")
    with pytest.raises(StoreError, match="schema version 0"):
        Store(f"sqlite:///{tmp_path}/old.db")
    with pytest.raises(StoreError, match="no results store"):
        Store(f"sqlite:///{tmp_path}/missing.db", create=False)
    with pytest.raises(StoreError, match="not a valid SQLAlchemy URL"):
        Store("nonsense-url")
    with pytest.raises(StoreError, match="no study named 'x'"):
        store.get_study("x")
