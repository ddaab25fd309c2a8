"""The results store's connection, faults and read-only reports, on SQLAlchemy Core.

``Database`` opens a store for reading (``platform runs`` and ``show`` use it directly: no
ORM, no SQLModel, so they start fast); ``autoplat.core.store.Store`` adds the SQLModel
tables and every write. Both pass database errors through ``_guarded``: transient ones are
retried, then one-line ``StoreFault``.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    DateTime,
    Enum,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
    column,
    create_engine,
    event,
    select,
    table,
    text,
)
from sqlalchemy.engine import Engine, Row, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.errors import StoreError, StoreFault

SCHEMA_VERSION = 2  # 2: al_rounds gained seed and trial_id; trials gained attrs
OBJECTIVES_KEY = "_objectives"  # in a stored search config: [[metric, direction], ...]
BASELINE_KEY = "_baseline"  # in a stored search config: the [baseline] model and its scores


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
    def run(self: Database, *args: Any, **kwargs: Any) -> Any:
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


class UTCTime(TypeDecorator):
    """A stored time read back aware, in UTC (as SQLModel's UTCDateTime stores it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:  # SQLite keeps UTC without an offset
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# The columns the reports read (the SQLModel tables in store.py define the schema;
# tests/test_store.py checks these agree with them).
STUDIES = table(
    "studies",
    column("id", Integer),
    column("name", String),
    column("kind", String),
    column("direction", String),
    column("metric", String),
    column("state", Enum(StudyState)),
    column("target_trials", Integer),
    column("config", Text),
    column("started_at", UTCTime),
    column("ended_at", UTCTime),
)
TRIALS = table(
    "trials",
    column("id", Integer),
    column("study_id", Integer),
    column("number", Integer),
    column("state", Enum(TrialState)),
    column("params", Text),
    column("value", Float),
    column("started_at", UTCTime),
    column("ended_at", UTCTime),
    column("error", Text),
    column("node", String),
    column("attrs", Text),
)
METRICS = table(
    "trial_metrics",
    column("trial_id", Integer),
    column("step", Integer),
    column("name", String),
    column("value", Float),
)
ARTIFACTS = table(
    "artifacts",
    column("id", Integer),
    column("study_id", Integer),
    column("trial_id", Integer),
    column("kind", String),
    column("path", String),
)


class Database:
    """A results store at one SQLAlchemy URL, opened for reading: its studies and their
    summaries. ``Store`` (store.py) is the same with ``create=True`` and the writes.

    ``create=False`` opens an existing store for reading only (SQLite: read-only mode;
    on a read-only mount it reads the file as immutable). ``busy_timeout_s`` (SQLite; env
    AUTOPLAT_STORE_BUSY_TIMEOUT_S, default 30) is how long a write waits for another
    writer's lock; ``retry_s`` (servers; env AUTOPLAT_STORE_RETRY_S, default 30) how long
    an unreachable server is retried before StoreFault.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        create: bool = False,
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
        """Check the store is a platform database of our schema version (``Store`` also
        creates and migrates it)."""
        with self.engine.connect() as conn:
            tables = set(self.engine.dialect.get_table_names(conn))
            version = None
            if "schema_version" in tables:
                version = conn.execute(text("SELECT version FROM schema_version")).scalar()
        if version is None:
            if tables - {"sqlite_sequence"}:
                raise StoreError(
                    f"'{self._where()}' holds tables but is not a platform database; "
                    "pass another --storage URL"
                )
            if not create:
                raise StoreError(f"'{self._where()}' holds no platform results yet")
            version = self._create_schema()
        elif version == 1 and create:
            version = self._migrate_from_1()
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"'{self._where()}' has schema version {version}; this autoplat reads version "
                f"{SCHEMA_VERSION}. Use a matching autoplat or a new --storage"
            )
        if create:
            self._add_new_tables(tables)
        self._use_wal()

    def _use_wal(self) -> None:
        """Readers never block the writer (the setting persists in the SQLite file)."""
        if self.is_sqlite and not self.readonly:
            raw = self.engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()

    # -- reports -----------------------------------------------------------------
    @_guarded
    def study_rows(self) -> list[Row]:
        """Every study (its columns as attributes), oldest first."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(STUDIES).order_by(STUDIES.c.id)))

    @_guarded
    def read_study(self, name: str) -> Row:
        """The study named ``name``; StoreError listing the studies when there is none."""
        with self.engine.connect() as conn:
            row = conn.execute(select(STUDIES).where(STUDIES.c.name == name)).first()
        return row or self.no_study(name)

    def no_study(self, name: str) -> Any:
        """Raise StoreError: no study named ``name`` (the message lists the studies)."""
        listed = ", ".join(row.name for row in self.study_rows()) or "none yet"
        raise StoreError(f"no study named '{name}' in {self.display_url}. Studies: {listed}")

    @_guarded
    def summary(self, study: Any) -> dict[str, Any]:
        """The study, its trials (params, state, final metrics) and the best trial, as JSON.
        ``study``: a row of ``study_rows`` or a ``Store`` Study."""
        ids = select(TRIALS.c.id).where(TRIALS.c.study_id == study.id)
        with self.engine.connect() as conn:
            trials = conn.execute(
                select(TRIALS).where(TRIALS.c.study_id == study.id).order_by(TRIALS.c.number)
            ).all()
            metric_rows = conn.execute(
                select(METRICS.c.trial_id, METRICS.c.name, METRICS.c.value)
                .where(METRICS.c.trial_id.in_(ids))
                .order_by(METRICS.c.step)
            ).all()
            artifact_rows = conn.execute(
                select(ARTIFACTS.c.trial_id, ARTIFACTS.c.kind, ARTIFACTS.c.path)
                .where(ARTIFACTS.c.study_id == study.id)
                .order_by(ARTIFACTS.c.id)
            ).all()
        final: dict[int, dict[str, float]] = {}  # the latest value of every metric
        for trial_id, name, value in metric_rows:
            final.setdefault(trial_id, {})[name] = value
        files: dict[int | None, dict[str, str]] = {}
        for trial_id, kind, path in artifact_rows:
            files.setdefault(trial_id, {})[kind] = path
        rows = [_trial_dict(t, final.get(t.id, {}), files.get(t.id, {})) for t in trials]
        counts = {state.value: 0 for state in TrialState}
        for row in rows:
            if SUPERSEDED not in row["attrs"]:  # history: a later trial re-ran its work
                counts[row["state"]] += 1
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
            "best": best_row(rows, study.direction),
        }
        config = json.loads(study.config or "{}")
        if BASELINE_KEY in config:
            summary["study"]["baseline"] = config[BASELINE_KEY]
        objectives = config.get(OBJECTIVES_KEY)
        if objectives:
            summary["study"]["objectives"] = dict(objectives)
            summary["pareto_front"] = pareto_front(rows, objectives)
        return summary


def best_row(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The completed trial with the best value (the first of equals), or None."""
    done = [r for r in rows if r["state"] == TrialState.COMPLETE and r["value"] is not None]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda r: r["value"])


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


def _trial_dict(trial: Row, metrics: dict[str, float], artifacts: dict[str, str]) -> dict[str, Any]:
    ended = trial.ended_at
    return {
        "number": trial.number,
        "state": trial.state.value,
        "params": json.loads(trial.params),
        "value": trial.value,
        "metrics": metrics,
        "started_at": trial.started_at.isoformat(),
        "duration_s": (ended - trial.started_at).total_seconds() if ended else None,
        "error": trial.error,
        "node": trial.node,
        "attrs": json.loads(trial.attrs or "{}"),
        "artifacts": artifacts,  # kind -> path: checkpoint, a trainer's files
    }
