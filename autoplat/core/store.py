"""The results store: sqlmodel tables (Optuna-shaped) and the Store API.

SQLite by default (``runs/platform.db``; WAL, busy_timeout, writes in BEGIN IMMEDIATE);
PostgreSQL (``postgresql+psycopg://...``) for a team. A study has at most one live driver
(``Store.lease``); readers open their own Store. Every method that talks to the database
retries transient errors and then raises one-line ``StoreFault`` (see ``_guarded``).
"""

from __future__ import annotations

import enum
import functools
import json
import os
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Column, Text, UniqueConstraint, delete, event, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlmodel import Field, Session, SQLModel, create_engine, func, select

from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.errors import StoreError, StoreFault

SCHEMA_VERSION = 2  # 2: al_rounds gained seed and trial_id; trials gained attrs
OBJECTIVES_KEY = "_objectives"  # in a stored search config: [[metric, direction], ...]


def objectives(study: Study) -> list[tuple[str, str]]:
    """(metric, direction) of each objective of a study; its metric alone when single."""
    stored = json.loads(study.config or "{}").get(OBJECTIVES_KEY)
    return [tuple(o) for o in stored] if stored else [(study.metric, study.direction)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class TrialState(enum.StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"
    INTERRUPTED = "interrupted"


SUPERSEDED = "superseded_by"
"""A trial attr: the number of a later trial that ran the same work again (an AL experiment
re-run by --resume); the summary counts only the later one (the store keeps both)."""


class StudyState(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"
    id: int | None = Field(default=None, primary_key=True)
    version: int


class Study(SQLModel, table=True):
    __tablename__ = "studies"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    kind: str = "search"
    direction: str = "maximize"
    metric: str = "val_accuracy"
    state: StudyState = StudyState.RUNNING
    target_trials: int = 0
    config: str = Field(default="{}", sa_column=Column(Text))
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None


class Trial(SQLModel, table=True):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="studies.id", index=True)
    number: int
    state: TrialState = TrialState.RUNNING
    params: str = Field(default="{}", sa_column=Column(Text))
    value: float | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    node: str | None = None
    ray_trial_id: str | None = None
    attrs: str = Field(default="{}", sa_column=Column(Text))  # JSON: what a trial produced

    @property
    def params_dict(self) -> dict[str, Any]:
        return json.loads(self.params)

    @property
    def attrs_dict(self) -> dict[str, Any]:
        return json.loads(self.attrs or "{}")

    @property
    def duration_s(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None


class TrialMetric(SQLModel, table=True):
    __tablename__ = "trial_metrics"
    __table_args__ = (UniqueConstraint("trial_id", "step", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    trial_id: int = Field(foreign_key="trials.id", index=True)
    step: int
    name: str
    value: float


class ALRound(SQLModel, table=True):
    """One round of one active-learning experiment (an acquisition and a seed)."""

    __tablename__ = "al_rounds"
    __table_args__ = (UniqueConstraint("study_id", "acquisition", "seed", "round"),)
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="studies.id", index=True)
    trial_id: int | None = Field(default=None, foreign_key="trials.id")
    acquisition: str
    seed: int = 0
    round: int
    n_labeled: int
    metrics: str = Field(default="{}", sa_column=Column(Text))  # JSON: metrics, queried ids

    @property
    def metrics_dict(self) -> dict[str, Any]:
        return json.loads(self.metrics or "{}")


class Artifact(SQLModel, table=True):
    __tablename__ = "artifacts"
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="studies.id", index=True)
    trial_id: int | None = Field(default=None, foreign_key="trials.id")
    kind: str
    path: str
    created_at: datetime = Field(default_factory=utcnow)


class DriverLease(SQLModel, table=True):
    """The one live driver of a study: refreshed by its heartbeat, taken over when stale."""

    __tablename__ = "driver_leases"
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="studies.id", unique=True)
    host: str
    pid: int
    token: str
    started_at: datetime
    heartbeat_at: datetime


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _lease_age_s(lease: DriverLease) -> float:
    return (utcnow() - lease.heartbeat_at).total_seconds()


def _lease_live(lease: DriverLease, stale_after_s: float) -> bool:
    """A lease is live while its heartbeat is fresh and, on this host, its process runs."""
    if _lease_age_s(lease) >= stale_after_s:
        return False
    return lease.host != socket.gethostname() or _pid_alive(lease.pid)


def _seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise StoreError(f"{name}={raw!r} must be a positive number of seconds; unset it or fix it")
    return value


def _wal_readable(path: Path) -> bool:
    """A WAL reader needs the -shm file, or a folder where SQLite can create it."""
    return any(Path(f"{path}{end}").exists() for end in ("-shm", "-wal")) or os.access(
        path.parent, os.W_OK
    )


def _sqlite_engine(url: str, readonly: bool, busy_timeout_s: float) -> Engine:
    parsed = make_url(url)
    busy_ms = int(busy_timeout_s * 1000)
    connect_args = {"timeout": busy_timeout_s, "check_same_thread": False}
    if readonly:  # readers never write, never take the write lock, never create the file
        path = Path(parsed.database).expanduser().resolve()
        # a finished store on a read-only mount: no -shm can be made, nobody can write it
        mode = "mode=ro" if _wal_readable(path) else "immutable=1"
        engine = create_engine(
            f"sqlite:///file:{quote(str(path))}?{mode}&uri=true", connect_args=connect_args
        )

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn, _record):  # pragma: no cover - exercised by every reader
            dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")
            dbapi_conn.execute("PRAGMA query_only=ON")

        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; ~30% faster commits
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _server_engine(url: str) -> Engine:
    """A database server: check pooled connections before use (they die when it restarts)."""
    parsed = make_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":  # psycopg 3 is what autoplat[postgres] installs
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args = {"connect_timeout": 10}
    return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def engine_for(url: str, *, readonly: bool = False, busy_timeout_s: float = 30.0) -> Engine:
    """The engine the Store uses for ``url`` (for other readers, e.g. the TUI): SQLite with
    WAL and BEGIN IMMEDIATE, or read-only (immutable on a read-only mount); a server with
    pre-ping, PostgreSQL through psycopg 3."""
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, readonly, busy_timeout_s)
    return _server_engine(url)


def _guarded(method: Callable) -> Callable:
    """The one place database errors pass: retry transient ones with backoff (a lock past
    the busy timeout: a few times; a server gone: for ``retry_s``), then raise StoreFault."""

    @functools.wraps(method)
    def run(self: Store, *args: Any, **kwargs: Any) -> Any:
        start, attempt = time.monotonic(), 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except IntegrityError:
                raise  # a broken invariant (a bug), not a fault of the store
            except DBAPIError as exc:
                attempt += 1
                if not self._retryable(exc, attempt, start):
                    waited = time.monotonic() - start
                    raise StoreFault(self._fault_message(exc, waited)) from None
                time.sleep(min(0.1 * 2**attempt, 2.0))

    return run


_SQLITE_FAULTS = (  # (words in SQLite's message, kind)
    (("locked", "busy"), "locked"),
    (("full",), "full"),
    (("malformed", "corrupt"), "corrupt"),
)


def _sqlite_fault(exc: DBAPIError) -> str:
    text = str(exc.orig).lower()
    return next((kind for words, kind in _SQLITE_FAULTS if any(w in text for w in words)), "")


def _pg_unreachable(exc: DBAPIError) -> bool:
    """The connection was lost or refused, or the server is shutting down or starting."""
    state = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or state is None or state[:2] in ("08", "57")


def _pg_transient(exc: DBAPIError) -> bool:
    """Unreachable for now, too many clients, a deadlock or serialization failure."""
    state = getattr(exc.orig, "sqlstate", None) or ""
    return _pg_unreachable(exc) or state[:2] == "40" or state == "53300"


class Store:
    """Read and write studies, trials and metrics at one SQLAlchemy URL.

    ``create=False`` opens an existing store for reading only (SQLite: read-only mode;
    on a read-only mount it reads the file as immutable). ``busy_timeout_s`` (SQLite; env
    AUTOPLAT_STORE_BUSY_TIMEOUT_S, default 30) is how long a write waits for another
    writer's lock; ``retry_s`` (servers; env AUTOPLAT_STORE_RETRY_S, default 30) how long
    an unreachable server is retried before StoreFault.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        create: bool = True,
        *,
        busy_timeout_s: float | None = None,
        retry_s: float | None = None,
    ) -> None:
        self.url = url
        self.busy_timeout_s = busy_timeout_s or _seconds_from_env(
            "AUTOPLAT_STORE_BUSY_TIMEOUT_S", 30.0
        )
        self.retry_s = retry_s or _seconds_from_env("AUTOPLAT_STORE_RETRY_S", 30.0)
        try:
            parsed = make_url(url)
            self.is_sqlite = parsed.get_backend_name() == "sqlite"
            if self.is_sqlite and not create:
                path = parsed.database
                if path and path != ":memory:" and not Path(path).exists():
                    raise StoreError(
                        f"no results store at {path}: run `platform search CONFIG` first, "
                        "or pass --storage URL"
                    )
            self.readonly = self.is_sqlite and not create
            self.engine = engine_for(
                url, readonly=self.readonly, busy_timeout_s=self.busy_timeout_s
            )
            self._init_schema(create)
        except ArgumentError as exc:
            raise StoreError(
                f"--storage '{url}' is not a valid SQLAlchemy URL ({exc}); use e.g. "
                "sqlite:///runs/platform.db or postgresql+psycopg://user@host/db"
            ) from None
        except DBAPIError as exc:
            raise self._open_error(exc) from None
        except ModuleNotFoundError as exc:
            postgres = "psycopg" in str(exc.name)
            hint = "pip install 'autoplat[postgres]'" if postgres else "pip install it"
            raise StoreError(
                f"the database driver for '{self._where()}' is not installed ({exc.name}); "
                f"{hint}, or use a sqlite:/// URL"
            ) from None

    def _open_error(self, exc: DBAPIError) -> StoreError:
        """Opening failed: a damaged file is a fault (exit 1); anything else, a bad URL."""
        if self.is_sqlite and _sqlite_fault(exc) == "corrupt":
            return StoreFault(self._fault_message(exc))
        if not self.is_sqlite and _pg_unreachable(exc):
            return StoreError(
                f"cannot reach the database server at {self._where()} "
                f"({_first_line(exc.orig)}); check --storage and that the server runs"
            )
        return StoreError(
            f"cannot open the results store at '{self._where()}': {_first_line(exc.orig)}. "
            "Check the path or URL and that it is a platform database"
        )

    @property
    def display_url(self) -> str:
        """The URL to print: a server's password hidden."""
        return make_url(self.url).render_as_string(hide_password=True)

    def _where(self) -> str:
        """The store for messages: a file path, or a server URL without its password."""
        return (make_url(self.url).database or ":memory:") if self.is_sqlite else self.display_url

    def _retryable(self, exc: DBAPIError, attempt: int, start: float) -> bool:
        if self.is_sqlite:
            return _sqlite_fault(exc) == "locked" and attempt < 3
        return _pg_transient(exc) and time.monotonic() - start < self.retry_s

    def _fault_message(self, exc: DBAPIError, waited_s: float = 0.0) -> str:
        """One line: what failed, which store, what to do (after ``waited_s`` of retries)."""
        then = "run the command again" if self.readonly else "continue with --resume"
        detail = _first_line(exc.orig)
        where = self._where()
        if self.is_sqlite:
            kind = _sqlite_fault(exc)
            if kind == "locked":
                return (
                    f"another program holds a write lock on {where} for more than "
                    f"{max(waited_s, self.busy_timeout_s):.0f} s; close it and {then}"
                )
            if kind == "full":
                return f"the disk holding {where} is full; free space and {then}"
            if kind == "corrupt":
                path = shlex.quote(where)
                return (
                    f"{where} is damaged ({detail}); restore a backup or recover it with "
                    f"`sqlite3 {path} .recover | sqlite3 {path}.recovered`"
                )
            return f"the results store {where} failed ({detail}); check the file and {then}"
        parsed = make_url(self.url)
        server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
        if getattr(exc.orig, "sqlstate", None) == "53100":
            return f"the disk of PostgreSQL at {server} is full ({detail}); free space and {then}"
        if _pg_unreachable(exc):
            return f"cannot reach PostgreSQL at {server} ({detail}); check the server and {then}"
        return f"the results store {where} failed ({detail}); check the server and {then}"

    def _init_schema(self, create: bool) -> None:
        with Session(self.engine) as session:
            tables = set(self.engine.dialect.get_table_names(session.connection()))
        if "schema_version" not in tables:
            if tables - {"sqlite_sequence"}:
                raise StoreError(
                    f"'{self._where()}' holds tables but is not a platform database; "
                    "pass another --storage URL"
                )
            if not create:
                raise StoreError(f"'{self._where()}' holds no platform results yet")
            SQLModel.metadata.create_all(self.engine)
            with Session(self.engine) as session:
                session.add(SchemaVersion(version=SCHEMA_VERSION))
                session.commit()
            self._use_wal()
            return
        with Session(self.engine) as session:
            version = session.exec(select(SchemaVersion.version)).first()
        if version == 1 and create:
            version = self._migrate_from_1()
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"'{self._where()}' has schema version {version}; this autoplat reads version "
                f"{SCHEMA_VERSION}. Use a matching autoplat or a new --storage"
            )
        if create and "driver_leases" not in tables:  # added to schema 2 later
            DriverLease.__table__.create(self.engine, checkfirst=True)
        self._use_wal()

    def _migrate_from_1(self) -> int:
        """Add trials.attrs; version 1 never wrote al_rounds, so recreate it with its columns."""
        from sqlalchemy import text

        with Session(self.engine) as session:
            if session.exec(select(func.count()).select_from(ALRound.__table__)).one():
                return 1  # rows we cannot place: refuse below rather than guess
        ALRound.__table__.drop(self.engine)
        ALRound.__table__.create(self.engine)
        with Session(self.engine) as session:
            session.execute(text("ALTER TABLE trials ADD COLUMN attrs TEXT DEFAULT '{}'"))
            session.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION})
            session.commit()
        return SCHEMA_VERSION

    def _use_wal(self) -> None:
        """Readers never block the writer (the setting persists in the SQLite file)."""
        if self.is_sqlite and not self.readonly:
            raw = self.engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- the driver lease ----------------------------------------------------------
    @_guarded
    def acquire_lease(self, study_id: int, *, stale_after_s: float = 30.0) -> str:
        """Become the study's one driver and return the lease token. Refuses (StoreError)
        while another driver's lease is live; takes over a stale one (its heartbeat older
        than ``stale_after_s``, or its process gone on this host)."""
        with self.session() as s:  # the study row lock (SQLite: BEGIN IMMEDIATE) serializes
            study = s.exec(select(Study).where(Study.id == study_id).with_for_update()).first()
            if study is None:
                raise StoreError(f"no study with id {study_id} in {self._where()}")
            lease = s.exec(select(DriverLease).where(DriverLease.study_id == study_id)).first()
            if lease is not None and _lease_live(lease, stale_after_s):
                raise StoreError(
                    f"study '{study.name}' is being run by another driver (host {lease.host}, "
                    f"pid {lease.pid}, heartbeat {max(_lease_age_s(lease), 0):.0f}s ago); wait "
                    "for it to finish or stop it (a driver that died is taken over after "
                    f"{stale_after_s:g} s)"
                )
            lease = lease or DriverLease(study_id=study_id)
            lease.host, lease.pid, lease.token = socket.gethostname(), os.getpid(), uuid.uuid4().hex
            lease.started_at = lease.heartbeat_at = utcnow()
            s.add(lease)
            s.commit()
            return lease.token

    @_guarded
    def heartbeat(self, study_id: int, token: str) -> bool:
        """Refresh a lease; False when it is no longer ours (another driver took it over)."""
        with self.session() as s:
            result = s.execute(
                update(DriverLease)
                .where(DriverLease.study_id == study_id, DriverLease.token == token)
                .values(heartbeat_at=utcnow())
            )
            s.commit()
            return result.rowcount == 1

    @_guarded
    def release_lease(self, study_id: int, token: str) -> None:
        """Give a lease up; only its own holder's token removes it."""
        with self.session() as s:
            s.execute(
                delete(DriverLease).where(
                    DriverLease.study_id == study_id, DriverLease.token == token
                )
            )
            s.commit()

    @contextmanager
    def lease(
        self, study_id: int, *, interval_s: float = 5.0, stale_after_s: float = 30.0
    ) -> Iterator[str]:
        """Hold the study's driver lease for a block (yields its token): a daemon thread
        heartbeats every ``interval_s``; released on exit, exceptions and Ctrl-C included."""
        token = self.acquire_lease(study_id, stale_after_s=stale_after_s)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._keep_alive,
            args=(study_id, token, interval_s, stop),
            name=f"autoplat-lease-{study_id}",
            daemon=True,
        )
        beat.start()
        try:
            yield token
        finally:
            stop.set()
            beat.join(timeout=1.0)
            with suppress(StoreFault):  # the store is down: the lease goes stale by itself
                self.release_lease(study_id, token)

    def _keep_alive(
        self, study_id: int, token: str, interval_s: float, stop: threading.Event
    ) -> None:
        while not stop.wait(interval_s):
            try:
                if not self.heartbeat(study_id, token):
                    return  # taken over: another driver owns the study now
            except StoreFault:
                continue  # the store is down for now: beat again next time

    # -- studies -----------------------------------------------------------------
    @_guarded
    def create_study(self, name: str, **fields: Any) -> Study:
        with self.session() as s:
            study = Study(name=name, **fields)
            s.add(study)
            s.commit()
            return study

    @_guarded
    def find_study(self, name: str) -> Study | None:
        with self.session() as s:
            return s.exec(select(Study).where(Study.name == name)).first()

    def get_study(self, name: str) -> Study:
        study = self.find_study(name)
        if study is None:
            names = [st.name for st in self.studies()]
            listed = ", ".join(names) or "none yet"
            raise StoreError(f"no study named '{name}' in {self.display_url}. Studies: {listed}")
        return study

    @_guarded
    def studies(self) -> list[Study]:
        with self.session() as s:
            return list(s.exec(select(Study).order_by(Study.id)))

    @_guarded
    def set_study_state(
        self, study_id: int, state: StudyState, target_trials: int | None = None
    ) -> None:
        """Set a study's state (and, on resume, its new ``target_trials``)."""
        with self.session() as s:
            study = s.get(Study, study_id)
            study.state = state
            if target_trials is not None:
                study.target_trials = target_trials
            study.ended_at = None if state == StudyState.RUNNING else utcnow()
            s.add(study)
            s.commit()

    # -- trials ------------------------------------------------------------------
    @_guarded
    def start_trial(self, study_id: int, params: dict[str, Any], **fields: Any) -> Trial:
        """Add a running trial with the next free number of its study."""
        with self.session() as s:
            last = s.exec(select(func.max(Trial.number)).where(Trial.study_id == study_id)).one()
            trial = Trial(
                study_id=study_id,
                number=0 if last is None else last + 1,
                params=json.dumps(params),
                **fields,
            )
            s.add(trial)
            s.commit()
            return trial

    @_guarded
    def add_metrics(self, trial_id: int, step: int, metrics: dict[str, float]) -> None:
        with self.session() as s:
            existing = {
                m.name: m
                for m in s.exec(
                    select(TrialMetric).where(
                        TrialMetric.trial_id == trial_id, TrialMetric.step == step
                    )
                )
            }
            for name, value in metrics.items():
                row = existing.get(name) or TrialMetric(trial_id=trial_id, step=step, name=name)
                row.value = float(value)
                s.add(row)
            s.commit()

    @_guarded
    def finish_trial(
        self,
        trial_id: int,
        state: TrialState,
        value: float | None = None,
        error: str | None = None,
    ) -> None:
        with self.session() as s:
            trial = s.get(Trial, trial_id)
            trial.state, trial.value, trial.error = state, value, error
            trial.ended_at = utcnow()
            s.add(trial)
            s.commit()

    @_guarded
    def interrupt_running(self, study_id: int) -> int:
        """Mark trials left running by a dead driver as interrupted; returns how many."""
        with self.session() as s:
            running = list(
                s.exec(
                    select(Trial).where(
                        Trial.study_id == study_id, Trial.state == TrialState.RUNNING
                    )
                )
            )
            for trial in running:
                trial.state = TrialState.INTERRUPTED
                trial.ended_at = trial.ended_at or utcnow()
                s.add(trial)
            s.commit()
            return len(running)

    @_guarded
    def trials(self, study_id: int) -> list[Trial]:
        with self.session() as s:
            return list(
                s.exec(select(Trial).where(Trial.study_id == study_id).order_by(Trial.number))
            )

    @_guarded
    def metrics(self, trial_id: int) -> dict[int, dict[str, float]]:
        """All metrics of a trial: step -> name -> value."""
        out: dict[int, dict[str, float]] = {}
        with self.session() as s:
            rows = s.exec(
                select(TrialMetric)
                .where(TrialMetric.trial_id == trial_id)
                .order_by(TrialMetric.step)
            )
            for m in rows:
                out.setdefault(m.step, {})[m.name] = m.value
        return out

    def final_metrics(self, trial_id: int) -> dict[str, float]:
        """The latest value of every metric a trial reported."""
        final: dict[str, float] = {}
        for step_metrics in self.metrics(trial_id).values():
            final.update(step_metrics)
        return final

    def best_trial(self, study: Study) -> Trial | None:
        done = [
            t
            for t in self.trials(study.id)
            if t.state == TrialState.COMPLETE and t.value is not None
        ]
        if not done:
            return None
        pick = max if study.direction == "maximize" else min
        return pick(done, key=lambda t: t.value)

    @_guarded
    def set_trial_attrs(self, trial_id: int, **attrs: Any) -> None:
        """Merge JSON-serializable ``attrs`` into a trial's attributes."""
        with self.session() as s:
            trial = s.get(Trial, trial_id)
            trial.attrs = json.dumps({**trial.attrs_dict, **attrs})
            s.add(trial)
            s.commit()

    @_guarded
    def add_al_round(self, row: ALRound) -> None:
        """Store one round, replacing a stored copy of the same (acquisition, seed, round)."""
        with self.session() as s:
            old = s.exec(
                select(ALRound).where(
                    ALRound.study_id == row.study_id,
                    ALRound.acquisition == row.acquisition,
                    ALRound.seed == row.seed,
                    ALRound.round == row.round,
                )
            ).first()
            if old is not None:
                s.delete(old)
                s.flush()
            s.add(row)
            s.commit()

    @_guarded
    def al_rounds(self, study_id: int) -> list[ALRound]:
        """Every stored round of a study, by acquisition, seed and round."""
        with self.session() as s:
            q = select(ALRound).where(ALRound.study_id == study_id)
            q = q.order_by(ALRound.acquisition, ALRound.seed, ALRound.round)
            return list(s.exec(q))

    @_guarded
    def set_trial_node(self, trial_id: int, node: str) -> None:
        with self.session() as s:
            trial = s.get(Trial, trial_id)
            trial.node = node
            s.add(trial)
            s.commit()

    # -- artifacts ---------------------------------------------------------------
    @_guarded
    def add_artifact(self, study_id: int, trial_id: int | None, kind: str, path: str) -> Artifact:
        """Record a file (e.g. a trial's checkpoint) that belongs to a study or trial."""
        with self.session() as s:
            artifact = Artifact(study_id=study_id, trial_id=trial_id, kind=kind, path=path)
            s.add(artifact)
            s.commit()
            return artifact

    @_guarded
    def artifacts(
        self, study_id: int, trial_id: int | None = None, kind: str | None = None
    ) -> list[Artifact]:
        """A study's artifacts, oldest first; only one trial's or one kind's when given."""
        query = select(Artifact).where(Artifact.study_id == study_id)
        if trial_id is not None:
            query = query.where(Artifact.trial_id == trial_id)
        if kind is not None:
            query = query.where(Artifact.kind == kind)
        with self.session() as s:
            return list(s.exec(query.order_by(Artifact.id)))

    @_guarded
    def delete_artifact(self, artifact_id: int) -> None:
        """Forget an artifact (the caller removes its file)."""
        with self.session() as s:
            artifact = s.get(Artifact, artifact_id)
            if artifact is not None:
                s.delete(artifact)
                s.commit()

    # -- whole studies -----------------------------------------------------------
    @_guarded
    def delete_study(self, name: str, *, stale_after_s: float = 30.0) -> list[str]:
        """Delete a study's rows (trials, metrics, rounds, artifacts, lease) in one
        transaction and return the paths of the artifacts it recorded (the caller decides
        about those files). Refuses (StoreError) while a driver's lease on it is live."""
        with self.session() as s:
            study = s.exec(select(Study).where(Study.name == name).with_for_update()).first()
            if study is None:
                raise StoreError(f"no study named '{name}' in {self.display_url}")
            lease = s.exec(select(DriverLease).where(DriverLease.study_id == study.id)).first()
            if lease is not None and _lease_live(lease, stale_after_s):
                raise StoreError(
                    f"study '{name}' is being run (host {lease.host}, pid {lease.pid}); stop "
                    "it first, then delete it"
                )
            trial_ids = select(Trial.id).where(Trial.study_id == study.id)
            paths = list(s.exec(select(Artifact.path).where(Artifact.study_id == study.id)))
            s.execute(delete(TrialMetric).where(TrialMetric.trial_id.in_(trial_ids)))
            for table in (ALRound, Artifact, DriverLease):
                s.execute(delete(table).where(table.study_id == study.id))
            s.execute(delete(Trial).where(Trial.study_id == study.id))
            s.execute(delete(Study).where(Study.id == study.id))
            s.commit()
            return paths

    @_guarded
    def _study_rows(self, name: str) -> tuple[Study, list[Trial], list[TrialMetric], list, list]:
        """A study's row and all rows that belong to it (for ``copy_study``)."""
        study = self.get_study(name)
        with self.session() as s:
            trials = list(s.exec(select(Trial).where(Trial.study_id == study.id)))
            ids = [t.id for t in trials]
            metrics = list(s.exec(select(TrialMetric).where(TrialMetric.trial_id.in_(ids))))
            rounds = list(s.exec(select(ALRound).where(ALRound.study_id == study.id)))
            files = list(s.exec(select(Artifact).where(Artifact.study_id == study.id)))
        return study, trials, metrics, rounds, files

    def copy_study(self, name: str, to: Store, new_name: str | None = None) -> Study:
        """Copy a study with all its rows into the store ``to`` (another URL, SQLite or a
        server, or this one under ``new_name``), in one transaction there; artifacts keep
        their paths (no file is copied). StoreError when ``to`` has the name already."""
        study, trials, metrics, rounds, files = self._study_rows(name)
        return to._insert_copy(study, trials, metrics, rounds, files, new_name or name)

    @_guarded
    def _insert_copy(
        self,
        study: Study,
        trials: list[Trial],
        metrics: list[TrialMetric],
        rounds: list[ALRound],
        files: list[Artifact],
        name: str,
    ) -> Study:
        def fields(row: SQLModel, **changes: Any) -> dict[str, Any]:
            return {**row.model_dump(exclude={"id"}), **changes}

        with self.session() as s:
            if s.exec(select(Study).where(Study.name == name)).first() is not None:
                raise StoreError(
                    f"{self.display_url} already has a study named '{name}'; delete it there "
                    "first or pick another name"
                )
            copy = Study(**fields(study, name=name))
            s.add(copy)
            s.flush()
            ids: dict[int | None, int | None] = {None: None}
            for trial in trials:
                new = Trial(**fields(trial, study_id=copy.id))
                s.add(new)
                s.flush()
                ids[trial.id] = new.id
            s.add_all(TrialMetric(**fields(m, trial_id=ids[m.trial_id])) for m in metrics)
            for row in (*rounds, *files):
                s.add(type(row)(**fields(row, study_id=copy.id, trial_id=ids[row.trial_id])))
            s.commit()
            return copy

    # -- reports -----------------------------------------------------------------
    def summary(self, study: Study) -> dict[str, Any]:
        """The study, its trials (params, state, final metrics) and the best trial, as JSON."""
        trials = self.trials(study.id)
        files: dict[int | None, dict[str, str]] = {}
        for artifact in self.artifacts(study.id):
            files.setdefault(artifact.trial_id, {})[artifact.kind] = artifact.path
        rows = [_trial_dict(t, self.final_metrics(t.id), files.get(t.id, {})) for t in trials]
        best = self.best_trial(study)
        counts = {state.value: 0 for state in TrialState}
        for t in trials:
            if SUPERSEDED not in t.attrs_dict:  # history: a later trial re-ran its work
                counts[t.state.value] += 1
        summary = {
            "study": {
                "name": study.name,
                "kind": study.kind,
                "state": study.state.value,
                "direction": study.direction,
                "metric": study.metric,
                "target_trials": study.target_trials,
                "started_at": study.started_at.isoformat(),
                "ended_at": study.ended_at.isoformat() if study.ended_at else None,
                "trial_counts": counts,
                "storage": self.display_url,
            },
            "trials": rows,
            "best": next((r for r in rows if r["number"] == best.number), None) if best else None,
        }
        objectives = json.loads(study.config).get(OBJECTIVES_KEY)
        if objectives:
            summary["study"]["objectives"] = dict(objectives)
            summary["pareto_front"] = pareto_front(rows, objectives)
        return summary


def pareto_front(rows: list[dict[str, Any]], objectives: list[list[str]]) -> list[int]:
    """Numbers of the completed trials no other completed trial dominates, by the first
    objective. ``objectives``: (metric, "maximize"/"minimize") pairs."""
    signs = [1.0 if direction == "maximize" else -1.0 for _, direction in objectives]
    points = []
    for row in rows:
        values = [row["metrics"].get(name) for name, _ in objectives]
        if row["state"] == "complete" and all(v is not None for v in values):
            points.append((row["number"], [s * v for s, v in zip(signs, values, strict=True)]))

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    front = [(n, p) for n, p in points if not any(dominates(q, p) for _, q in points)]
    return [n for n, p in sorted(front, key=lambda item: -item[1][0])]


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _trial_dict(
    trial: Trial, metrics: dict[str, float], artifacts: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.value,
        "params": trial.params_dict,
        "value": trial.value,
        "metrics": metrics,
        "started_at": trial.started_at.isoformat(),
        "duration_s": trial.duration_s,
        "error": trial.error,
        "node": trial.node,
        "attrs": trial.attrs_dict,
        "artifacts": artifacts or {},  # kind -> path: checkpoint, a trainer's files
    }
