"""Results out from the CLI: `--json` summaries, `show --csv/--history`, AL per-seed JSON,
`delete` (only its own files), `copy` between SQLite and PostgreSQL, `export-optuna`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from autoplat.cli import main
from autoplat.core.registry import get_registry
from autoplat.core.store import ALRound, Store, TrialState

MY_DIGITS = """
from autoplat import hookimpl
from autoplat.plugins.datasets.digits import Digits

class MyDigits(Digits):
    name = "my-digits"

@hookimpl
def register_datasets(register):
    register(MyDigits)
"""


@pytest.fixture
def local_plugins():
    """Forget the local plugin modules a test loads."""
    registry = get_registry()
    names = set(registry.plugins)
    yield
    for name in set(registry.plugins) - names:
        registry.remove_plugin(name)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_search_json_csv_history_export_and_delete(
    write_config, tmp_path, ray_address, capsys, local_plugins
):
    url = f"sqlite:///{tmp_path}/runs.db"
    config = write_config(name="tiny", trials=2, epochs=2)
    config.write_text(config.read_text().replace('name = "digits"', 'name = "my-digits"'))
    plugin = tmp_path / "my_digits.py"  # a local dataset: Ray workers must load it too
    plugin.write_text(MY_DIGITS)
    search = ["search", str(config), "--storage", url, "--address", ray_address, "--json"]
    code, out, err = run(capsys, *search, "--plugin", str(plugin))
    assert code == 0, err
    summary = json.loads(out)  # stdout holds the JSON alone
    assert summary["study"]["name"] == "tiny" and summary["study"]["trial_counts"]["complete"] == 2
    assert summary["best"]["artifacts"]["checkpoint"]

    code, out, _ = run(capsys, "show", "tiny", "--storage", url, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["number"] for r in rows] == ["0", "1"]
    assert {"params_width", "params_lr", "value", "final_val_accuracy", "best_val_accuracy"} <= set(
        rows[0]
    )
    assert {"final_test_accuracy", "duration_s", "node", "started_at"} <= set(rows[0])

    code, out, _ = run(capsys, "show", "tiny", "--storage", url, "--history", "--json")
    history = json.loads(out)["history"]
    accuracy = [h for h in history if h["metric"] == "val_accuracy"]
    assert sorted((h["trial"], h["step"]) for h in accuracy) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    code, out, _ = run(capsys, "show", "tiny", "--storage", url, "--history")
    assert (
        out.splitlines()[0] == "trial,step,metric,value"
        and len(out.splitlines()) == len(history) + 1
    )

    import optuna

    target = f"sqlite:///{tmp_path}/optuna.db"
    assert run(capsys, "export-optuna", "tiny", "--storage", url, "--to", target)[0] == 0
    loaded = optuna.load_study(study_name="tiny", storage=target)
    dists = loaded.best_trial.distributions  # from the named space and [space]
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-3, 5e-3, log=True)
    assert dists["width"] == optuna.distributions.CategoricalDistribution([16, 32])
    assert loaded.best_trial.number == summary["best"]["number"]

    onnx = tmp_path / "best.onnx"
    code, out, err = run(capsys, "export", "tiny", "--storage", url, "--out", str(onnx), "--json")
    exported = json.loads(out)
    assert code == 0 and exported["trial"] == summary["best"]["number"]
    assert (
        exported["files"][0]["path"] == str(onnx)
        and exported["files"][0]["bytes"] == onnx.stat().st_size
    )

    # delete: the study's rows and its recorded checkpoint; nothing else
    checkpoint = Path(summary["best"]["artifacts"]["checkpoint"])
    mine = checkpoint.parent / "notes.txt"  # the user's file in the checkpoint folder
    mine.write_text("keep me")
    outside = tmp_path / "samples.txt"  # a recorded file outside it
    outside.write_text("keep me too")
    store = Store(url)
    store.add_artifact(store.get_study("tiny").id, None, "samples", str(outside))
    code, _, err = run(capsys, "delete", "tiny", "--storage", url)
    assert code == 2 and "pass --yes" in err  # stdin is not a terminal: never deletes unasked
    code, out, _ = run(capsys, "delete", "tiny", "--storage", url, "--yes", "--json")
    done = json.loads(out)
    assert done["removed_files"] == [str(checkpoint)] and done["kept_files"] == [str(outside)]
    assert not checkpoint.exists() and mine.read_text() == "keep me" and outside.exists()
    assert Store(url).find_study("tiny") is None
    with Store(url).session() as s:  # no row of it is left behind
        for table in ("trials", "trial_metrics", "artifacts", "driver_leases"):
            assert s.connection().exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 0


def _study(store: Store, name: str = "s") -> None:
    """A small finished search with metrics, attrs and an artifact."""
    config = {"study": {"name": name}, "space": {"lr": {"low": 0.001, "high": 0.1, "log": True}}}
    study = store.create_study(name, config=json.dumps(config))
    for number, lr in enumerate([0.01, 0.05]):
        trial = store.start_trial(study.id, {"lr": lr}, node="n1")
        for step in (1, 2):
            store.add_metrics(trial.id, step, {"val_accuracy": 0.1 * step + number})
        store.set_trial_attrs(trial.id, note=f"t{number}")
        store.finish_trial(trial.id, TrialState.COMPLETE, value=0.2 + number)
    store.add_artifact(study.id, None, "notes", "/nowhere/notes.txt")


def _dump(url: str, name: str) -> tuple:
    store = Store(url, create=False)
    study = store.get_study(name)
    trials = [
        (t.number, t.state, t.params, t.value, t.node, t.attrs, store.metrics(t.id))
        for t in store.trials(study.id)
    ]
    files = [(a.kind, a.path) for a in store.artifacts(study.id)]
    return study.kind, study.metric, study.config, trials, files


def test_copy_between_sqlite_and_postgres_keeps_every_row(store_url, tmp_path, capsys):
    other = f"sqlite:///{tmp_path}/other.db"
    _study(Store(store_url))
    code, out, err = run(capsys, "copy", "s", "--storage", store_url, "--to", other, "--json")
    assert code == 0, err
    assert json.loads(out)["trials"] == 2
    assert _dump(other, "s") == _dump(store_url, "s")
    # and back, under another name (SQLite -> PostgreSQL when store_url is a server)
    code, _, err = run(capsys, "copy", "s", "--storage", other, "--to", store_url, "--name", "s2")
    assert code == 0, err
    assert _dump(store_url, "s2") == _dump(store_url, "s")
    code, _, err = run(capsys, "copy", "s", "--storage", other, "--to", store_url)
    assert code == 2 and "already has a study named 's'" in err


def test_delete_refuses_a_study_that_is_running(store_url, capsys):
    url = store_url
    store = Store(url)
    _study(store)
    with store.lease(store.get_study("s").id):
        code, _, err = run(capsys, "delete", "s", "--storage", url, "--yes")
        assert code == 2 and "is being run" in err
    assert run(capsys, "delete", "s", "--storage", url, "--yes")[0] == 0
    code, _, err = run(capsys, "delete", "s", "--storage", url, "--yes")
    assert code == 2 and "no study named 's'" in err


def test_al_show_json_has_every_seed_with_its_queried_ids(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    study = store.create_study("al", kind="al", metric="test_accuracy")
    for seed in (0, 1):
        trial = store.start_trial(study.id, {"acquisition": "margin", "seed": seed})
        for rnd in (0, 1):
            metrics = {
                "test_accuracy": 0.5 + rnd / 10 + seed / 100,
                "queried": [seed, rnd],
                "labels": [1, 2],
            }
            store.add_al_round(
                ALRound(
                    study_id=study.id,
                    trial_id=trial.id,
                    acquisition="margin",
                    seed=seed,
                    round=rnd,
                    n_labeled=10 * (rnd + 1),
                    metrics=json.dumps(metrics),
                )
            )
        store.finish_trial(trial.id, TrialState.COMPLETE, value=0.6)
    code, out, _ = run(capsys, "show", "al", "--storage", url, "--json")
    data = json.loads(out)
    assert code == 0 and data["curves"]["margin"]["labels"] == [10, 20]
    assert data["per_seed"]["margin"]["1"] == [
        {"round": 0, "n_labeled": 10, "test_accuracy": 0.51, "queried": [1, 0], "labels": [1, 2]},
        {"round": 1, "n_labeled": 20, "test_accuracy": 0.61, "queried": [1, 1], "labels": [1, 2]},
    ]
    code, out, _ = run(capsys, "show", "al", "--storage", url, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["seed"], r["round"], r["queried"]) for r in rows][:2] == [
        ("0", "0", "[0, 0]"),
        ("0", "1", "[0, 1]"),
    ]
    code, _, err = run(capsys, "show", "al", "--storage", url, "--csv", "--json")
    assert code == 2 and "pick one" in err


def test_export_optuna_cli(tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path}/s.db"
    _study(Store(url))
    target = f"sqlite:///{tmp_path}/optuna.db"
    code, out, err = run(capsys, "export-optuna", "s", "--storage", url, "--to", target, "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "study": "s",
        "to": target,
        "name": "s",
        "trials": 2,
        "directions": ["maximize"],
    }
    loaded = optuna.load_study(study_name="s", storage=target)
    assert [t.params["lr"] for t in loaded.trials] == [0.01, 0.05]
    assert loaded.best_trial.value == 1.2 and loaded.best_trial.intermediate_values == {
        1: 1.1,
        2: 1.2,
    }
    assert (
        loaded.best_trial.user_attrs["note"] == "t1"
        and loaded.best_trial.user_attrs["node"] == "n1"
    )
    assert loaded.trials[0].distributions["lr"] == optuna.distributions.FloatDistribution(
        0.001, 0.1, log=True
    )
    code, _, err = run(capsys, "export-optuna", "s", "--storage", url, "--to", target)
    assert code == 2 and "already has a study 's'" in err
    code, _, err = run(capsys, "export-optuna", "s", "--storage", url, "--to", "optuna.db")
    assert code == 2 and "--to 'optuna.db' is not a valid SQLAlchemy URL" in err
    code, _, err = run(capsys, "copy", "s", "--storage", url, "--to", "other.db")
    assert code == 2 and "--to 'other.db' is not a valid SQLAlchemy URL" in err


def test_show_top_limits_json_as_it_limits_the_leaderboard(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/top.db"
    store = Store(url)
    study = store.create_study("ranked", metric="val_accuracy", direction="maximize")
    for value in (0.5, 0.9, 0.7, None):
        trial = store.start_trial(study.id, {"lr": value})
        state = TrialState.FAIL if value is None else TrialState.COMPLETE
        store.finish_trial(trial.id, state, value)
    assert main(["show", "ranked", "--storage", url, "--top", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["value"] for t in shown["trials"]] == [0.9, 0.7]
    assert main(["show", "ranked", "--storage", url, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["trials"]) == 4
