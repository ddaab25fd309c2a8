"""The results store: sqlmodel tables (Optuna-shaped) and the Store API.

SQLite by default (``runs/platform.db``; WAL, busy_timeout, writes in BEGIN IMMEDIATE);
PostgreSQL (``postgresql+psycopg://...``) for a team. A study has at most one live driver
(``Store.lease``); readers open their own Store. Every method that talks to the database
retries transient errors and then raises one-line ``StoreFault`` (see ``_guarded``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Text, UniqueConstraint, delete, update
from sqlmodel import Field, Session, SQLModel, func, select

from autoplat.core.database import (  # noqa: F401 - re-exported: the store's names
    OBJECTIVES_KEY,
    SCHEMA_VERSION,
    SUPERSEDED,
    Database,
    StudyState,
    TrialState,
    _guarded,
    engine_for,
    pareto_front,
)
from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.errors import StoreError, StoreFault


def objectives(study: Study) -> list[tuple[str, str]]:
    """(metric, direction) of each objective of a study; its metric alone when single."""
    stored = json.loads(study.config or "{}").get(OBJECTIVES_KEY)
    return [tuple(o) for o in stored] if stored else [(study.metric, study.direction)]


def utcnow() -> datetime:
    return datetime.now(UTC)


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


class Store(Database):
    """Read and write studies, trials and metrics at one SQLAlchemy URL (created with its
    tables when missing; ``create=False``: read only, as ``Database``)."""

    def __init__(self, url: str = DEFAULT_URL, create: bool = True, **options: Any) -> None:
        super().__init__(url, create, **options)

    def _create_schema(self) -> int:
        SQLModel.metadata.create_all(self.engine)
        with Session(self.engine) as session:
            session.add(SchemaVersion(version=SCHEMA_VERSION))
            session.commit()
        return SCHEMA_VERSION

    def _add_new_tables(self, tables: set[str]) -> None:
        if "driver_leases" not in tables:  # added to schema 2 later
            DriverLease.__table__.create(self.engine, checkfirst=True)

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
        return self.find_study(name) or self.no_study(name)

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
