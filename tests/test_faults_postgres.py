"""The search driver's faults on a real PostgreSQL server: a second driver is refused,
kill -9 of the driver's process group mid-study, then --resume takes the dead driver's
lease over and finishes exactly the study's trials, none repeated (the same path
test_faults_driver.py runs on SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from autoplat.core.errors import StoreError
from autoplat.core.space import params_key
from autoplat.core.store import Store, StudyState, TrialState
from autoplat.testing import PLATFORM


def _completed(url: str, name: str) -> list:
    try:
        store = Store(url, create=False)
        study = store.find_study(name)
    except StoreError:  # the driver has not made the tables yet
        return []
    return [t for t in store.trials(study.id) if t.state == TrialState.COMPLETE] if study else []


def _leased(url: str) -> bool:
    try:
        with Store(url, create=False).session() as session:
            return bool(session.execute(text("SELECT COUNT(*) FROM driver_leases")).scalar())
    except (StoreError, SQLAlchemyError):  # no tables yet
        return False


def _wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.faults
def test_kill_9_second_driver_and_resume_on_postgres(write_config, tmp_path, pg_url, ray_address):
    path = write_config(name="pgkill", trials=2, epochs=20, extra="max_concurrent = 1\n")
    search = [*PLATFORM, "search", str(path), "--storage", pg_url]
    first = subprocess.Popen(
        search,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _leased(pg_url))
        second = subprocess.run(
            [*search, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        _wait_for(lambda: _completed(pg_url, "pgkill"))
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.stderr.close()
    store = Store(pg_url)
    study = store.get_study("pgkill")
    assert study.state == StudyState.RUNNING  # what kill -9 leaves behind
    before = {t.number: t.params for t in _completed(pg_url, "pgkill")}
    assert len(before) == 1  # trial 1 was training when the driver died

    resumed = subprocess.run(
        [*search, "--resume", "--address", ray_address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    password = make_url(pg_url).password
    assert f":{password}@" not in resumed.stdout + resumed.stderr  # the password stays hidden
    trials = store.trials(study.id)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    assert {t.number: t.params for t in trials if t.number in before} == before
    assert len({params_key(t.params_dict) for t in done}) == 2
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.INTERRUPTED}
    assert store.get_study("pgkill").state == StudyState.FINISHED
