"""The driver lease: one live driver per study, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import update
from sqlmodel import select

from autoplat.core.errors import StoreError
from autoplat.core.store import DriverLease, Store


def _lease_row(store: Store, study_id: int) -> DriverLease | None:
    with store.session() as s:
        return s.exec(select(DriverLease).where(DriverLease.study_id == study_id)).first()


def _set_lease(store: Store, study_id: int, **values) -> None:
    with store.session() as s:
        s.execute(update(DriverLease).where(DriverLease.study_id == study_id).values(**values))
        s.commit()


def _dead_pid() -> int:
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    return proc.pid


def test_second_driver_is_refused_until_the_first_releases(store_url):
    first, second = Store(store_url), Store(store_url)
    study = first.create_study("s")
    token = first.acquire_lease(study.id)
    with pytest.raises(StoreError) as refused:
        second.acquire_lease(study.id)
    message = str(refused.value)
    assert "\n" not in message
    row = _lease_row(second, study.id)
    assert message == (
        f"study 's' is being run by another driver (host {row.host}, pid {row.pid}, "
        "heartbeat 0s ago); wait for it to finish or stop it (a driver that died is taken "
        "over after 30 s)"
    )
    assert row.token == token
    second.release_lease(study.id, "not-the-token")  # only the holder's token releases
    assert _lease_row(first, study.id).token == token
    first.release_lease(study.id, token)
    assert _lease_row(first, study.id) is None
    assert second.acquire_lease(study.id) != token


@pytest.mark.slow
def test_dead_or_silent_driver_is_taken_over(store_url):
    first, second = Store(store_url), Store(store_url)
    study = first.create_study("s")
    old = first.acquire_lease(study.id)
    _set_lease(first, study.id, pid=_dead_pid())  # the driver was killed
    new = second.acquire_lease(study.id)
    assert new != old and _lease_row(first, study.id).token == new
    assert first.heartbeat(study.id, old) is False  # the old driver learns it lost the study
    assert second.heartbeat(study.id, new) is True
    first.release_lease(study.id, old)
    assert _lease_row(first, study.id).token == new

    _set_lease(second, study.id, host="another-host", pid=1)  # live elsewhere: refused
    with pytest.raises(StoreError, match="host another-host, pid 1"):
        first.acquire_lease(study.id)
    _set_lease(
        second, study.id, heartbeat_at=_lease_row(second, study.id).heartbeat_at.replace(year=2000)
    )
    assert first.acquire_lease(study.id)  # its heartbeat stopped long ago: taken over


def test_lease_block_heartbeats_and_releases(store_url):
    first, second = Store(store_url), Store(store_url)
    study = first.create_study("s")
    with first.lease(study.id, interval_s=0.1) as token:
        beat = _lease_row(first, study.id).heartbeat_at
        time.sleep(2.0)  # longer than the stale window below: only the beats keep it fresh
        assert _lease_row(first, study.id).heartbeat_at > beat
        with pytest.raises(StoreError, match="being run by another driver"):
            # kept fresh by the thread; 1.5 s leaves room for a loaded machine's delays
            second.acquire_lease(study.id, stale_after_s=1.5)
        assert _lease_row(first, study.id).token == token
    assert _lease_row(first, study.id) is None
    with pytest.raises(KeyboardInterrupt), first.lease(study.id, interval_s=0.2):
        raise KeyboardInterrupt
    assert _lease_row(first, study.id) is None
    assert not [t for t in threading.enumerate() if t.name.startswith("autoplat-lease")]


def test_concurrent_acquires_have_one_winner(store_url):
    study = Store(store_url).create_study("s")
    stores = [Store(store_url) for _ in range(4)]
    start, results = threading.Barrier(len(stores)), []

    def acquire(store: Store) -> None:
        start.wait()
        try:
            results.append(store.acquire_lease(study.id))
        except StoreError as exc:
            results.append(exc)

    threads = [threading.Thread(target=acquire, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, StoreError)]
    assert (len(won), len(refused)) == (1, len(stores) - 1), results
    assert _lease_row(stores[0], study.id).token == won[0]


HOLDER = """
import sys, time
from autoplat.core.store import Store
store = Store(sys.argv[1])
with store.lease(store.get_study("s").id, interval_s=0.2):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.faults
def test_a_killed_driver_process_is_taken_over(store_url):
    store = Store(store_url)
    study = store.create_study("s")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StoreError, match=f"pid {holder.pid}, heartbeat 0s ago"):
            store.acquire_lease(study.id)
    finally:
        holder.kill()  # kill -9: no release
        holder.wait()
    assert _lease_row(store, study.id).pid == holder.pid
    token = store.acquire_lease(study.id)  # its process is gone: taken over at once
    assert _lease_row(store, study.id).token == token
