"""The results store: sqlmodel tables (Optuna-shaped) and the Store API.

SQLite by default (``runs/platform.db``; WAL, busy_timeout, writes in BEGIN IMMEDIATE);
any SQLAlchemy URL works. The search driver is the only writer; readers open their own
Store.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Column, Text, UniqueConstraint, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlmodel import Field, Session, SQLModel, create_engine, func, select

from autoplat.core.errors import StoreError

SCHEMA_VERSION = 2  # 2: al_rounds gained seed and trial_id; trials gained attrs
OBJECTIVES_KEY = "_objectives"  # in a stored search config: [[metric, direction], ...]
DEFAULT_URL = "sqlite:///runs/platform.db"


def utcnow() -> datetime:
    return datetime.now(UTC)


class TrialState(enum.StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"
    INTERRUPTED = "interrupted"


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


def _sqlite_engine(url: str, readonly: bool = False) -> Engine:
    parsed = make_url(url)
    if readonly:  # readers never write, never take the write lock, never create the file
        path = quote(str(Path(parsed.database).expanduser().resolve()))
        engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true",
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn, _record):  # pragma: no cover - exercised by every reader
            dbapi_conn.execute("PRAGMA busy_timeout=30000")
            dbapi_conn.execute("PRAGMA query_only=ON")

        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; ~30% faster commits
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Store:
    """Read and write studies, trials and metrics at one SQLAlchemy URL.

    ``create=False`` opens an existing store for reading only (SQLite: read-only mode).
    """

    def __init__(self, url: str = DEFAULT_URL, create: bool = True) -> None:
        self.url = url
        try:
            is_sqlite = make_url(url).get_backend_name() == "sqlite"
            if is_sqlite and not create:
                path = make_url(url).database
                if path and path != ":memory:" and not Path(path).exists():
                    raise StoreError(
                        f"no results store at {path}: run `platform search CONFIG` first, "
                        "or pass --storage URL"
                    )
            self.readonly = is_sqlite and not create
            self.engine = _sqlite_engine(url, self.readonly) if is_sqlite else create_engine(url)
            self._init_schema(create)
        except ArgumentError as exc:
            raise StoreError(
                f"--storage '{url}' is not a valid SQLAlchemy URL ({exc}); "
                "use e.g. sqlite:///runs/platform.db or postgresql://user@host/db"
            ) from None
        except (OperationalError, DatabaseError) as exc:
            raise StoreError(
                f"cannot open the results store at '{url}': {exc.orig}. "
                "Check the path or URL and that it is a platform database"
            ) from None
        except ModuleNotFoundError as exc:
            raise StoreError(
                f"the database driver for '{url}' is not installed ({exc.name}); "
                "pip install it, or use a sqlite:/// URL"
            ) from None

    def _init_schema(self, create: bool) -> None:
        with Session(self.engine) as session:
            tables = set(self.engine.dialect.get_table_names(session.connection()))
        if "schema_version" not in tables:
            if tables - {"sqlite_sequence"}:
                raise StoreError(
                    f"'{self.url}' holds tables but is not a platform database; "
                    "pass another --storage URL"
                )
            if not create:
                raise StoreError(f"'{self.url}' holds no platform results yet")
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
                f"'{self.url}' has schema version {version}; this autoplat reads version "
                f"{SCHEMA_VERSION}. Use a matching autoplat or a new --storage"
            )
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
        if self.engine.dialect.name == "sqlite" and not self.readonly:
            raw = self.engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- studies -----------------------------------------------------------------
    def create_study(self, name: str, **fields: Any) -> Study:
        with self.session() as s:
            study = Study(name=name, **fields)
            s.add(study)
            s.commit()
            return study

    def find_study(self, name: str) -> Study | None:
        with self.session() as s:
            return s.exec(select(Study).where(Study.name == name)).first()

    def get_study(self, name: str) -> Study:
        study = self.find_study(name)
        if study is None:
            names = [st.name for st in self.studies()]
            listed = ", ".join(names) or "none yet"
            raise StoreError(f"no study named '{name}' in {self.url}. Studies: {listed}")
        return study

    def studies(self) -> list[Study]:
        with self.session() as s:
            return list(s.exec(select(Study).order_by(Study.id)))

    def set_study_state(self, study_id: int, state: StudyState) -> None:
        with self.session() as s:
            study = s.get(Study, study_id)
            study.state = state
            study.ended_at = None if state == StudyState.RUNNING else utcnow()
            s.add(study)
            s.commit()

    # -- trials ------------------------------------------------------------------
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

    def trials(self, study_id: int) -> list[Trial]:
        with self.session() as s:
            return list(
                s.exec(select(Trial).where(Trial.study_id == study_id).order_by(Trial.number))
            )

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

    def set_trial_attrs(self, trial_id: int, **attrs: Any) -> None:
        """Merge JSON-serializable ``attrs`` into a trial's attributes."""
        with self.session() as s:
            trial = s.get(Trial, trial_id)
            trial.attrs = json.dumps({**trial.attrs_dict, **attrs})
            s.add(trial)
            s.commit()

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

    def al_rounds(self, study_id: int) -> list[ALRound]:
        """Every stored round of a study, by acquisition, seed and round."""
        with self.session() as s:
            q = select(ALRound).where(ALRound.study_id == study_id)
            q = q.order_by(ALRound.acquisition, ALRound.seed, ALRound.round)
            return list(s.exec(q))

    def set_trial_node(self, trial_id: int, node: str) -> None:
        with self.session() as s:
            trial = s.get(Trial, trial_id)
            trial.node = node
            s.add(trial)
            s.commit()

    # -- artifacts ---------------------------------------------------------------
    def add_artifact(self, study_id: int, trial_id: int | None, kind: str, path: str) -> Artifact:
        """Record a file (e.g. a trial's checkpoint) that belongs to a study or trial."""
        with self.session() as s:
            artifact = Artifact(study_id=study_id, trial_id=trial_id, kind=kind, path=path)
            s.add(artifact)
            s.commit()
            return artifact

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

    def delete_artifact(self, artifact_id: int) -> None:
        """Forget an artifact (the caller removes its file)."""
        with self.session() as s:
            artifact = s.get(Artifact, artifact_id)
            if artifact is not None:
                s.delete(artifact)
                s.commit()

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
                "storage": self.url,
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
