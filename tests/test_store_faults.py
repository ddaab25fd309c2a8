"""Store faults are one-line StoreFaults after retries, and the store continues afterwards:
a lock held past the busy timeout, a full disk, a damaged file, a PostgreSQL server that
goes away; and a finished store reads from a read-only mount."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from autoplat.cli import main
from autoplat.core.errors import StoreError, StoreFault
from autoplat.core.store import Store, StudyState, TrialState
from autoplat.testing import run_platform

pytestmark = pytest.mark.faults


def _finished_study(url: str, trials: int = 3, pad: int = 0) -> Store:
    store = Store(url)
    study = store.create_study("s", target_trials=trials)
    for i in range(trials):
        trial = store.start_trial(study.id, {"depth": i, "pad": "x" * pad})
        store.add_metrics(trial.id, 1, {"val_accuracy": i / trials})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=i / trials)
    store.set_study_state(study.id, StudyState.FINISHED)
    store.engine.dispose()  # the last connection closes: the WAL is folded in and removed
    return store


# -- SQLite ------------------------------------------------------------------------
def test_lock_held_past_the_busy_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPLAT_STORE_BUSY_TIMEOUT_S", "0.5")
    db = tmp_path / "p.db"
    store = Store(f"sqlite:///{db}")
    study = store.create_study("s")
    other = sqlite3.connect(db, isolation_level=None)  # another program, e.g. a DB browser
    other.execute("BEGIN EXCLUSIVE")
    start = time.monotonic()
    with pytest.raises(StoreFault) as fault:
        store.start_trial(study.id, {})
    waited = time.monotonic() - start
    assert 1.5 <= waited < 6  # three tries of 0.5 s, with backoff between them
    assert re.fullmatch(
        f"another program holds a write lock on {re.escape(str(db))} for more than [2-6] s; "
        "close it and continue with --resume",
        str(fault.value),
    )
    assert Store(f"sqlite:///{db}", create=False).trials(study.id) == []  # readers still read
    other.rollback()
    other.close()
    assert store.start_trial(study.id, {}).number == 0  # and the writer continues


def test_a_lock_released_in_time_is_retried(tmp_path):
    db = tmp_path / "p.db"
    store = Store(f"sqlite:///{db}", busy_timeout_s=0.5)
    study = store.create_study("s")
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.9, other.rollback).start()  # longer than one busy timeout
    assert store.start_trial(study.id, {}).number == 0
    other.close()


@pytest.mark.slow
def test_damaged_file_is_one_line(tmp_path, capsys):
    db = tmp_path / "p.db"
    _finished_study(f"sqlite:///{db}", trials=60, pad=2000)
    size = db.stat().st_size
    assert size > 40 * 4096 and not Path(f"{db}-wal").exists()
    with db.open("r+b") as f:  # garbage over four pages in the middle
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xde\xad\xbe\xef" * 4096)
    expected = (
        f"error: {db} is damaged (database disk image is malformed); restore a backup or "
        f"recover it with `sqlite3 {db} .recover | sqlite3 {db}.recovered`"
    )
    runs = run_platform("runs", "--storage", f"sqlite:///{db}", timeout=120)
    assert runs.returncode == 1, runs.stderr
    assert "Traceback" not in runs.stderr
    assert runs.stderr.strip() == expected
    assert main(["show", "s", "--storage", f"sqlite:///{db}"]) == 1
    assert capsys.readouterr().err.strip() == expected


def _mount_tmpfs(folder: Path, size: str) -> None:
    """A small tmpfs at ``folder`` (root only), else skip with the reason."""
    if os.geteuid() != 0:
        pytest.skip("a small disk needs a tmpfs mount, which needs root")
    folder.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_disk_full_is_one_line_and_resumable(tmp_path):
    folder = tmp_path / "small"
    _mount_tmpfs(folder, "1m")
    try:
        db = folder / "p.db"
        store = Store(f"sqlite:///{db}")
        study = store.create_study("s")
        trial = store.start_trial(study.id, {})
        store.set_trial_attrs(trial.id, kept=1)
        filler = _fill(folder)
        with pytest.raises(StoreFault) as fault:
            for step in range(200):  # the WAL must grow: some write hits the full disk
                store.set_trial_attrs(trial.id, **{f"blob{step}": "y" * 20_000})
        assert str(fault.value) == (
            f"the disk holding {db} is full; free space and continue with --resume"
        )
        assert Store(f"sqlite:///{db}", create=False).trials(study.id)[0].attrs_dict["kept"] == 1
        filler.unlink()
        store.set_trial_attrs(trial.id, after=True)  # space freed: the store continues
        assert store.trials(study.id)[0].attrs_dict["after"] is True
        store.engine.dispose()
    finally:
        _unmount(folder)


@pytest.mark.slow
def test_finished_store_reads_from_a_read_only_mount(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        _mount_tmpfs(folder, "4m")
    db = folder / "p.db"
    try:
        _finished_study(f"sqlite:///{db}")
        assert sorted(p.name for p in folder.iterdir()) == ["p.db"]
        if as_root:  # root writes through chmod: make the mount itself read-only
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            db.chmod(0o444)
            folder.chmod(0o555)
        with pytest.raises(OSError):
            (folder / "probe").write_text("")
        show = run_platform("show", "s", "--storage", f"sqlite:///{db}", timeout=120)
        assert show.returncode == 0, show.stderr
        assert "0.6667" in show.stdout
        assert main(["runs", "--json", "--storage", f"sqlite:///{db}"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["state"] == "finished"
        from autoplat.tui.data import Reader  # the TUI's reader too

        reader = Reader(f"sqlite:///{db}")
        assert [s.name for s in reader.studies()] == ["s"]
        reader.close()
        assert sorted(p.name for p in folder.iterdir()) == ["p.db"]
    finally:
        if as_root:
            _unmount(folder)
        else:
            folder.chmod(0o755)


# -- PostgreSQL ---------------------------------------------------------------------
class _Proxy:
    """A TCP proxy in front of the PostgreSQL server that can go away and come back: what
    the store sees when the server restarts or the network drops."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self.start()

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        for sock in [self._listener, *self._sockets]:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxied(pg_url):
    """(proxy, URL through it) for a fresh PostgreSQL database."""
    url = make_url(pg_url)
    proxy = _Proxy(url.host, url.port or 5432)
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    proxy.stop()


def test_server_connections_killed_between_writes_are_replaced(pg_url, pg_admin):
    store = Store(pg_url)
    study = store.create_study("s")
    database = make_url(pg_url).database
    with pg_admin.connect() as conn:  # what a server restart does to every session
        killed = conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ).all()
    assert killed
    assert store.start_trial(study.id, {}).number == 0


def test_server_back_within_the_retry_time(proxied):
    proxy, url = proxied
    store = Store(url, retry_s=20)
    study = store.create_study("s")
    proxy.stop()
    threading.Timer(1.5, proxy.start).start()
    start = time.monotonic()
    assert store.start_trial(study.id, {}).number == 0
    assert time.monotonic() - start > 1.0  # it waited for the server (timing: benchmarks)
    assert len(store.trials(study.id)) == 1


def test_server_gone_is_one_line_and_resumable(proxied):
    proxy, url = proxied
    store = Store(url, retry_s=1)
    study = store.create_study("s")
    proxy.stop()
    with pytest.raises(StoreFault) as fault:
        store.start_trial(study.id, {})
    message = str(fault.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach PostgreSQL at 127.0.0.1:{proxy.port} (")
    assert message.endswith("); check the server and continue with --resume")
    proxy.start()
    assert store.start_trial(study.id, {}).number == 0
    with pytest.raises(StoreError) as opening:  # opening a store: a bad URL, exit 2
        Store(make_url(url).set(port=1).render_as_string(False))
    assert type(opening.value) is StoreError
    assert "cannot reach the database server at" in str(opening.value)


@pytest.mark.slow  # restarts the server with pg_ctl through runuser
def test_a_real_server_restart_mid_run(pg_url):
    """The server behind AUTOPLAT_TEST_PG (.ci/run sets AUTOPLAT_TEST_PG_DATA) restarts
    while a driver writes: every write lands, none raises."""
    data = os.environ.get("AUTOPLAT_TEST_PG_DATA")
    if not data or os.geteuid() != 0:
        pytest.skip("restarting the server needs root and AUTOPLAT_TEST_PG_DATA (.ci/run)")
    version = (Path(data) / "PG_VERSION").read_text().strip()
    pg_ctl = f"/usr/lib/postgresql/{version}/bin/pg_ctl"
    store = Store(pg_url, retry_s=30)
    study = store.create_study("s")
    log = f"{data}/server.log"  # the server must not inherit a pipe of ours
    command = ["runuser", "-u", "postgres", "--", pg_ctl, "-D", data, "-l", log, "-w"]
    restart = threading.Thread(
        target=subprocess.run,
        args=([*command, "restart", "-m", "fast"],),
        kwargs={"stdout": subprocess.DEVNULL, "check": True, "timeout": 60},
    )
    calls, start = 0, time.monotonic()
    restart.start()
    while restart.is_alive() or time.monotonic() - start < 1.0:  # pg_ctl's timeout ends it
        store.start_trial(study.id, {})
        calls += 1
    restart.join()
    store.start_trial(study.id, {})
    numbers = [t.number for t in store.trials(study.id)]
    assert numbers == list(range(len(numbers)))
    assert calls + 1 <= len(numbers) <= calls + 2  # (+1 if a commit's reply was lost)
