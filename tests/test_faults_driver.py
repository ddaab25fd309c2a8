"""The search driver under faults: a second driver, SIGTERM of the driver's process group,
a store locked mid-run, a crafted checkpoint row, a worker that dies, a trial that raises,
and the folders Ray leaves. Real drivers (subprocesses), real Ray, real SQLite files."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoplat.core.config import load_config
from autoplat.core.errors import StoreError
from autoplat.core.registry import get_registry
from autoplat.core.runner import ray_folder
from autoplat.core.space import params_key
from autoplat.core.store import Store, StudyState, TrialState
from autoplat.core.study import CHECKPOINT, record_checkpoint, run_study
from autoplat.testing import PLATFORM

CRASH_MARKS = ("Traceback", "SIGABRT", "*** ", "core dumped")


def _wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def _completed(url: str, name: str) -> list:
    try:  # the driver may not have made the store yet
        store = Store(url, create=False)
    except StoreError:
        return []
    study = store.find_study(name)
    return [t for t in store.trials(study.id) if t.state == TrialState.COMPLETE] if study else []


def _leased(db: Path) -> bool:
    try:
        return bool(sqlite3.connect(db).execute("SELECT COUNT(*) FROM driver_leases").fetchone()[0])
    except sqlite3.Error:
        return False


def _clean(stderr: str) -> None:
    for mark in CRASH_MARKS:
        assert mark not in stderr, stderr[-3000:]


@pytest.mark.slow
@pytest.mark.faults
def test_second_driver_refused_sigterm_stops_like_ctrl_c_and_resume_finishes(
    write_config, tmp_path, ray_address
):
    """One study through every driver fault: a second driver is refused while the first
    runs; SIGTERM to the first driver's process group (with the local Ray it started)
    stops it as Ctrl-C does; a dead driver's lease and a crafted checkpoint row do not
    stop or hurt --resume, which ends with exactly `trials` completed, none repeated."""
    (tmp_path / "store").mkdir()
    (tmp_path / "cwd").mkdir()
    url = f"sqlite:///{tmp_path}/store/term.db"
    path = write_config(name="term", trials=4, epochs=20, extra="max_concurrent = 1\n")
    search = [*PLATFORM, "search", str(path), "--storage", url]
    first = subprocess.Popen(
        search,
        cwd=tmp_path / "cwd",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as under systemd or Slurm
    )
    try:
        _wait_for(lambda: _leased(tmp_path / "store" / "term.db"))
        second = subprocess.run(
            [*search, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"pid {first.pid}" in second.stderr and socket.gethostname() in second.stderr
        _clean(second.stderr)
        seen = Store(url, create=False)  # the refused driver changed nothing of the first's
        study = seen.get_study("term")
        assert study.state == StudyState.RUNNING
        assert TrialState.INTERRUPTED not in {t.state for t in seen.trials(study.id)}
        _wait_for(lambda: _completed(url, "term"))
        os.killpg(first.pid, signal.SIGTERM)
        _, stderr = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 143, stderr[-3000:]
    assert f"Continue with: platform search {path} --resume --storage {url}" in stderr
    _clean(stderr)
    store = Store(url)
    study = store.get_study("term")
    assert study.state == StudyState.INTERRUPTED
    completed = _completed(url, "term")
    before = {t.number: t.params for t in completed}
    assert 1 <= len(before) < 4
    # nothing of Ray's is left: not in the cwd, not next to the store, not in /tmp/ray
    assert list((tmp_path / "cwd").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "store").iterdir() if p.is_dir()) == ["checkpoints"]
    assert not list(Path("/tmp/ray").glob(f"session_*_{first.pid}"))

    # a driver killed with its lease held (its pid is gone): --resume takes the lease over
    grab = f"from autoplat.core.store import Store; Store({url!r}).acquire_lease({study.id})"
    subprocess.run([sys.executable, "-c", grab], check=True, timeout=60)
    # a crafted row lists a file the platform did not make as a checkpoint of a trial
    precious = tmp_path / "precious.txt"
    precious.write_text("not a checkpoint")
    store.add_artifact(study.id, None, CHECKPOINT, str(precious))

    resumed = subprocess.run(
        [*search, "--resume", "--address", ray_address],
        cwd=tmp_path / "cwd",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _clean(resumed.stderr)
    trials = store.trials(study.id)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    assert {t.number: t.params for t in trials if t.number in before} == before
    assert len({params_key(t.params_dict) for t in done}) == 4  # no completed trial repeated
    assert store.get_study("term").state == StudyState.FINISHED
    assert precious.read_text() == "not a checkpoint"
    assert list((tmp_path / "cwd").iterdir()) == []


@pytest.mark.slow
@pytest.mark.faults
def test_a_store_locked_mid_run_exits_1_with_the_resume_command(
    write_config, tmp_path, ray_address
):
    url = f"sqlite:///{tmp_path}/lock.db"
    path = write_config(name="lock", trials=2, epochs=10, extra="max_concurrent = 1\n")
    search = [*PLATFORM, "search", str(path), "--storage", url, "--address", ray_address]
    env = {**os.environ, "AUTOPLAT_STORE_BUSY_TIMEOUT_S": "1"}
    driver = subprocess.Popen(
        search, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )

    def metrics_stored() -> bool:
        try:
            return (
                sqlite3.connect(tmp_path / "lock.db")
                .execute("SELECT COUNT(*) FROM trial_metrics")
                .fetchone()[0]
                > 0
            )
        except sqlite3.Error:
            return False

    lock = sqlite3.connect(tmp_path / "lock.db", isolation_level=None)
    try:
        _wait_for(metrics_stored)
        lock.execute("BEGIN EXCLUSIVE")  # another program holds the write lock from now on
        _, stderr = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
        lock.close()
    assert driver.returncode == 1, stderr[-3000:]
    assert "error: another program holds a write lock on" in stderr
    assert f"Continue with: platform search {path} --resume --storage {url}" in stderr
    _clean(stderr)

    resumed = subprocess.run([*search, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(_completed(url, "lock")) == 2
    assert Store(url).get_study("lock").state == StudyState.FINISHED


@pytest.mark.slow
@pytest.mark.faults
def test_a_dead_worker_is_retried_and_a_raising_trial_is_not(write_config, tmp_path, ray_address):
    marks = tmp_path / "attempts"
    marks.mkdir()

    def trainable(config, job):  # width 16: its worker dies once; width 32: raises
        from ray import tune

        attempts = len(list(marks.glob(f"{config['width']}-*")))
        (marks / f"{config['width']}-{attempts}").touch()
        if config["width"] == 32:
            raise ValueError("boom")
        if attempts == 0:
            os._exit(1)
        tune.report({"val_accuracy": 0.5, "finished": 1, "epoch": 1})

    path = write_config(name="retry", trials=2, strategy="grid", extra="max_failures = 1\n")
    path.write_text(path.read_text().replace("{ low = 1e-3, high = 5e-3, log = true }", "1e-3"))
    store = Store(f"sqlite:///{tmp_path}/retry.db")
    run_study(load_config(path, get_registry()), store, trainable=trainable)
    rows = store.trials(store.get_study("retry").id)
    trials = {t.params_dict["width"]: t for t in rows}
    assert len(rows) == 2  # a retry goes on in its trial's row
    assert trials[16].state == TrialState.COMPLETE
    assert trials[16].attrs_dict["retries"] == 1 and trials[16].attrs_dict["retry_errors"]
    assert trials[32].state == TrialState.FAIL and trials[32].error == "ValueError: boom"
    assert "retries" not in trials[32].attrs_dict
    assert sorted(p.name for p in marks.iterdir()) == ["16-0", "16-1", "32-0"]
    assert not (tmp_path / "ray").exists()  # Ray's run folder next to the store: removed


def test_retention_deletes_only_inside_the_studys_folder(tmp_path, caplog) -> None:
    store = Store(f"sqlite:///{tmp_path}/r.db")
    study = store.create_study("r", direction="maximize")
    folder = tmp_path / "checkpoints" / "r"
    folder.mkdir(parents=True)
    outside = tmp_path / "keep.txt"
    outside.write_text("mine")
    (folder / "link.pt").symlink_to(outside)  # inside by name, outside in fact
    paths = [outside, folder / "link.pt", folder / "0.pt", folder / "1.pt"]
    for number, (value, file) in enumerate(zip([0.1, 0.2, 0.3, 0.9], paths, strict=True)):
        trial = store.start_trial(study.id, {"n": number})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=value)
        if not file.exists():
            file.write_bytes(b"w")
        record_checkpoint(store, study, trial.id, str(file), "best", folder)
    assert outside.read_text() == "mine" and (folder / "link.pt").is_symlink()
    assert not (folder / "0.pt").exists() and (folder / "1.pt").exists()
    kept = sorted(Path(a.path).name for a in store.artifacts(study.id))
    assert kept == ["1.pt", "keep.txt", "link.pt"]
    assert caplog.text.count("not deleting checkpoint") == 2  # each file warned about once


def test_ray_folder_goes_away_with_the_folders_made_for_it(tmp_path) -> None:
    class Study:
        name = "s"
        workdir = str(tmp_path / "a" / "b")
        keep_ray_files = False

    with ray_folder(Study, "sqlite:///ignored.db") as folder:
        assert folder.parent == tmp_path / "a" / "b" and folder.name.startswith("s-")
        folder.mkdir(parents=True)
        (folder / "state.json").write_text("{}")
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "other").write_text("someone else's")
    Study.workdir = None
    with ray_folder(Study, f"sqlite:///{tmp_path}/x.db") as folder:
        assert folder.parent == tmp_path / "ray"
        folder.mkdir()
    assert [p.name for p in (tmp_path / "ray").iterdir()] == ["other"]

    Study.keep_ray_files = True
    with ray_folder(Study, f"sqlite:///{tmp_path}/x.db") as folder:
        folder.mkdir()
    assert folder.exists()


AL = """
[study]
name = "alterm"
seeds = 2

[model]
name = "mlp"
hidden = 64

[training]
epochs = 15

[dataset]
name = "digits"

[al]
acquisitions = ["margin"]
initial = 20
batch_size = 20
budget = 200

[resources]
max_concurrent = 1
"""


@pytest.mark.slow
@pytest.mark.faults
def test_sigterm_stops_al_like_ctrl_c_and_resume_finishes(tmp_path, ray_address):
    path = tmp_path / "al.toml"
    path.write_text(AL)
    url = f"sqlite:///{tmp_path}/al.db"
    command = [*PLATFORM, "al", str(path), "--storage", url, "--address", ray_address]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def rounds() -> list:
        try:
            store = Store(url, create=False)
        except StoreError:
            return []
        study = store.find_study("alterm")
        return store.al_rounds(study.id) if study else []

    try:
        _wait_for(rounds)
        driver.send_signal(signal.SIGTERM)
        _, stderr = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143, stderr[-3000:]
    assert f"Continue with: platform al {path} --resume --storage {url}" in stderr
    _clean(stderr)
    assert Store(url).get_study("alterm").state == StudyState.INTERRUPTED

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    store = Store(url)
    study = store.get_study("alterm")
    done = [t for t in store.trials(study.id) if t.state == TrialState.COMPLETE]
    assert sorted(t.params_dict["seed"] for t in done) == [0, 1]
    for seed in (0, 1):
        numbers = [r.round for r in store.al_rounds(study.id) if r.seed == seed]
        assert sorted(numbers) == list(range(10))  # each round once: none lost, none repeated
