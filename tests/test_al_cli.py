"""`platform al` end to end: Ray trials per (acquisition, seed), the store, show, resume,
config errors, and the file oracle with a person's labels."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autoplat.core.store import Store, TrialState
from autoplat.testing import run_platform

pytestmark = pytest.mark.slow  # every test here runs `platform al` in a subprocess

AL = """
[study]
name = "{name}"
seeds = {seeds}

[model]
name = "mlp"
hidden = 64
depth = 1
dropout = 0.2

[training]
epochs = 15
lr = 0.01

[dataset]
name = "digits"

[al]
acquisitions = {acquisitions}
initial = 20
batch_size = 20
budget = 60
{extra}
"""


def write_al(tmp_path: Path, name="al", seeds=2, acquisitions=("random", "margin"), extra=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(
        textwrap.dedent(
            AL.format(
                name=name, seeds=seeds, acquisitions=json.dumps(list(acquisitions)), extra=extra
            )
        )
    )
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_address):
    """One real study: 2 acquisitions x 2 seeds, 3 rounds each (20, 40, 60 labels)."""
    tmp = tmp_path_factory.mktemp("al")
    config = write_al(tmp)
    url = f"sqlite:///{tmp / 'al.db'}"
    result = run_platform("al", str(config), "--storage", url, "--address", ray_address)
    return tmp, config, url, result


def test_al_runs_every_acquisition_and_seed_and_stores_rounds(finished) -> None:
    tmp, config, url, result = finished
    assert result.returncode == 0, result.stderr
    store = Store(url, create=False)
    study = store.get_study("al")
    assert study.kind == "al" and study.state == "finished"
    trials = store.trials(study.id)
    assert sorted((t.params_dict["acquisition"], t.params_dict["seed"]) for t in trials) == [
        ("margin", 0),
        ("margin", 1),
        ("random", 0),
        ("random", 1),
    ]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    rounds = store.al_rounds(study.id)
    assert len(rounds) == 12
    for acq in ("random", "margin"):
        for seed in (0, 1):
            mine = [r for r in rounds if r.acquisition == acq and r.seed == seed]
            assert [r.n_labeled for r in mine] == [20, 40, 60]
            queried = [i for r in mine for i in r.metrics_dict["queried"]]
            assert len(set(queried)) == 60
            assert all(0 <= r.metrics_dict["test_accuracy"] <= 1 for r in mine)
    # the same seed starts from the same initial set whatever the acquisition
    first = {(r.acquisition, r.seed): r.metrics_dict["queried"] for r in rounds if r.round == 0}
    assert first["random", 0] == first["margin", 0] != first["random", 1]
    # learning: 60 labels beat 20 on average
    mean = lambda n: sum(r.metrics_dict["test_accuracy"] for r in rounds if r.n_labeled == n) / 4  # noqa: E731
    assert mean(60) > mean(20)
    assert "AULC" in result.stdout and "margin" in result.stdout


def test_show_prints_curves_and_json(finished) -> None:
    _, _, url, _ = finished
    shown = run_platform("show", "al", "--storage", url)
    assert shown.returncode == 0, shown.stderr
    assert "AULC" in shown.stdout and "÷random" in shown.stdout
    data = json.loads(run_platform("show", "al", "--storage", url, "--json").stdout)
    curves = data["curves"]
    assert set(curves) == {"random", "margin"}
    assert curves["random"]["labels"] == [20, 40, 60]
    assert curves["random"]["complete_seeds"] == 2
    area, _ = curves["margin"]["aulc"]
    assert min(curves["margin"]["mean"]) <= area <= max(curves["margin"]["mean"])


def test_rerun_needs_resume_and_resume_continues_lost_rounds_exactly(
    finished, ray_address, tmp_path
):
    shared, config, _, _ = finished
    tmp = shutil.copytree(shared, tmp_path / "al")  # its own store: the others read the original
    config, url = tmp / config.name, f"sqlite:///{tmp / 'al.db'}"
    again = run_platform("al", str(config), "--storage", url)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    before = {(r.acquisition, r.seed, r.round): r.metrics_dict for r in Store(url).al_rounds(1)}
    # lose the last two rounds of one experiment, as a crash would
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM al_rounds WHERE acquisition='margin' AND seed=1 AND round>0")
        db.execute(
            "UPDATE trials SET state='INTERRUPTED' WHERE json_extract(params,'$.acquisition')"
            "='margin' AND json_extract(params,'$.seed')=1"
        )
    resumed = run_platform(
        "al", str(config), "--storage", url, "--resume", "--address", ray_address
    )
    assert resumed.returncode == 0, resumed.stderr
    store = Store(url)
    after = {(r.acquisition, r.seed, r.round): r.metrics_dict for r in store.al_rounds(1)}
    assert after.keys() == before.keys()
    for key in [("margin", 1, 1), ("margin", 1, 2)]:
        assert after[key]["queried"] == before[key]["queried"]
        assert after[key]["test_accuracy"] == before[key]["test_accuracy"]
    assert len(store.trials(1)) == 5  # only the interrupted experiment ran again


def test_a_crashing_experiment_exits_1_without_traceback(tmp_path, ray_address) -> None:
    """A crash that is not the user's input (a ViT's loss with lr 1e9 becomes NaN) exits 1;
    a bad label file exits 2 (the file oracle's test below)."""
    config = write_al(tmp_path, name="crash", seeds=1, acquisitions=("random",))
    text = config.read_text().replace('name = "mlp"\nhidden = 64', 'name = "vit"')
    config.write_text(text.replace("lr = 0.01", "lr = 1e9").replace("epochs = 15", "epochs = 2"))
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    result = run_platform("al", str(config), "--storage", url, "--address", ray_address)
    assert result.returncode == 1, result.stderr
    assert "random seed 0 fail: TrialFailed: " in result.stderr
    assert "1 experiments failed" in result.stderr and "--resume" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    store = Store(url)
    (trial,) = store.trials(store.get_study("crash").id)
    assert trial.state == TrialState.FAIL and "user_error" not in trial.attrs_dict


@pytest.mark.parametrize(
    ("extra", "acquisitions", "message"),
    [
        ("", ("random", "marginn"), "did you mean 'margin'"),
        ("", ("random", "random"), "'random' is listed twice"),
        ('initial_sampling = "stratified"\n[oracle]\nname = "file"', ("random",), "stratified"),
        ("budgett = 3", ("random",), "did you mean 'budget'"),
        ("budget = 5", ("random",), "budget 5 is below initial 20"),
    ],
)
def test_config_errors_exit_2_with_file_and_key(tmp_path, extra, acquisitions, message) -> None:
    config = write_al(tmp_path, acquisitions=acquisitions)
    text = config.read_text()
    if extra.startswith("budget"):
        text = text.replace("budget = 60\n", "")
    config.write_text(text + textwrap.dedent(extra) + "\n")
    result = run_platform("al", str(config), "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and str(config) in result.stderr
    assert "Traceback" not in result.stderr


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"platform al exited {process.returncode} before {path}:\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path} after {seconds} s")
        time.sleep(0.2)


def _answer(query: Path, label_of) -> list[int]:
    ids = [int(row["id"]) for row in csv.DictReader(query.read_text().splitlines())]
    answer = query.with_name(query.name.replace(".query.", ".labels."))
    tmp = answer.with_name("." + answer.name)
    tmp.write_text("id,label\n" + "".join(f"{i},{label_of(i)}\n" for i in ids))
    tmp.replace(answer)
    return ids


def test_file_oracle_round_trip_with_a_bad_answer_fixed_and_resumed(tmp_path, ray_address) -> None:
    labels = tmp_path / "labels"
    config = write_al(
        tmp_path,
        name="human",
        seeds=1,
        acquisitions=("margin",),
        extra=f'[oracle]\nname = "file"\npath = "{labels}"\npoll_seconds = 0.2\n',
    )
    url = f"sqlite:///{tmp_path / 'h.db'}"
    command = [sys.executable, "-m", "autoplat.cli", "al", str(config), "--storage", url]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    folder = labels / "human"
    _wait_for(folder / "margin-seed0-round000.query.csv", process)
    first = _answer(folder / "margin-seed0-round000.query.csv", lambda i: i % 10)
    _wait_for(folder / "margin-seed0-round001.query.csv", process)
    # a person's typo: an id that was not queried -> a clear error, rounds kept
    bad = folder / "margin-seed0-round001.labels.csv"
    bad.write_text("id,label\n999999,3\n")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert "id 999999 was not queried" in err and "margin-seed0-round001.labels.csv:2" in err
    store = Store(url)
    (failed,) = store.trials(store.get_study("human").id)
    assert failed.state == TrialState.FAIL and failed.attrs_dict["user_error"] is True
    kept = store.al_rounds(store.get_study("human").id)
    assert [r.round for r in kept] == [0]
    assert kept[0].metrics_dict["queried"] == first
    assert kept[0].metrics_dict["labels"] == [i % 10 for i in first]
    # fix the answer (the query file is still there) and resume: it asks for round 2 next
    bad.unlink()
    process = subprocess.Popen(
        [*command, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    _answer(folder / "margin-seed0-round001.query.csv", lambda i: 7)
    _wait_for(folder / "margin-seed0-round002.query.csv", process)
    third = _answer(folder / "margin-seed0-round002.query.csv", lambda i: "3")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    rounds = Store(url).al_rounds(1)
    assert [r.n_labeled for r in rounds] == [20, 40, 60]
    assert rounds[1].metrics_dict["labels"] == [7] * 20
    assert rounds[2].metrics_dict["queried"] == third
    assert rounds[2].metrics_dict["labels"] == [3] * 20
