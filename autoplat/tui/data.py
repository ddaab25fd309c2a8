"""Read-only access to the results store for the TUI, and the diffing trial model.

The TUI never writes: SQLite files are opened with ``mode=ro`` and ``query_only``, other
databases only ever see SELECTs. Every failure (missing file, locked, old schema,
unreachable server) becomes a ``StoreError`` with a message fit for the screen; the
caller shows it and polls again.
"""

from __future__ import annotations

import json
import math
import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import String, inspect, type_coerce
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session, func, select

from autoplat.core.errors import StoreError
from autoplat.core.store import (
    OBJECTIVES_KEY,
    SCHEMA_VERSION,
    ALRound,
    Artifact,
    SchemaVersion,
    Study,
    StudyState,
    Trial,
    TrialMetric,
    TrialState,
    engine_for,
    pareto_front,
)

LOCK_TIMEOUT_S = 2.0  # a locked SQLite file fails the poll after this, and is retried
BULK_IN = 500  # above this many trial ids, fetch metrics by study instead of by id list
STATES = {state.name: state for state in TrialState}  # as SQLAlchemy's Enum stores them


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the store writes UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def fmt_value(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def fmt_param(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def fmt_objective(value: float | None) -> str:
    """An objective's value as `platform show` prints the Pareto front."""
    return "" if value is None else f"{value:.6g}"


def objectives_of(study: Study) -> list[tuple[str, str]]:
    """(metric, direction) of each objective of a multi-objective study; [] otherwise."""
    try:
        stored = json.loads(study.config or "{}").get(OBJECTIVES_KEY)
    except (ValueError, AttributeError):  # not a JSON object: a study without objectives
        return []
    return [(name, direction) for name, direction in stored or []]


@dataclass(frozen=True)
class StudyRow:
    """One line of the studies screen."""

    id: int
    name: str
    kind: str
    state: StudyState
    direction: str
    metric: str
    target_trials: int
    done: int
    running: int
    failed: int
    best: float | None
    started_at: datetime
    ended_at: datetime | None

    def elapsed_s(self, now: datetime) -> float:
        return ((self.ended_at or now) - self.started_at).total_seconds()

    def cells(self, now: datetime) -> tuple[str, ...]:
        done = f"{self.done}/{self.target_trials}" if self.target_trials else str(self.done)
        return (
            self.name,
            self.kind,
            self.state.value,
            done,
            str(self.running),
            str(self.failed),
            fmt_value(self.best),
            self.started_at.astimezone().strftime("%m-%d %H:%M"),
            fmt_seconds(self.elapsed_s(now)),
        )


class Reader:
    """Read-only queries against the store at ``url``; reconnects after any failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    # -- connection -----------------------------------------------------------------
    def _open(self) -> Engine:
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise StoreError(
                f"'{self.url}' is not a valid SQLAlchemy URL ({exc}); "
                "use e.g. sqlite:///runs/platform.db"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            path = Path(parsed.database or "").expanduser()
            if not parsed.database or str(path) == ":memory:":
                raise StoreError(f"'{self.url}' is not a file; pass --storage sqlite:///PATH")
            if not path.is_file():
                raise StoreError(
                    f"no results store at {path} yet: start a search "
                    "(platform search CONFIG) or pass --storage URL"
                )
        try:
            engine = engine_for(self.url, readonly=True, busy_timeout_s=LOCK_TIMEOUT_S)
        except ModuleNotFoundError as exc:
            raise StoreError(
                f"the database driver for '{self.url}' is not installed ({exc.name})"
            ) from None
        try:
            self._check_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return engine

    def _check_schema(self, engine: Engine) -> None:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "schema_version" not in tables:
                if tables - {"sqlite_sequence"}:
                    raise StoreError(f"'{self.url}' is not a platform database (no schema_version)")
                raise StoreError(f"'{self.url}' holds no platform results yet")
            version = conn.execute(select(SchemaVersion.version)).scalar()
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"'{self.url}' has schema version {version}; this autoplat reads version "
                f"{SCHEMA_VERSION}. Use a matching autoplat"
            )

    def _run(self, query: Any, orm: bool = False) -> list[Any]:
        """Execute a SELECT (``orm``: of whole table rows); any database failure closes the
        engine and raises StoreError."""
        try:
            if self._engine is None:
                self._engine = self._open()
            if orm:
                with Session(self._engine) as session:
                    return list(session.execute(query))
            with self._engine.connect() as conn:
                return list(conn.execute(query))
        except SQLAlchemyError as exc:
            self.close()
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            if "locked" in reason or "busy" in reason:
                reason += " (another process holds a write lock)"
            raise StoreError(f"cannot read '{self.url}': {reason}") from None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- queries ---------------------------------------------------------------------
    def studies(self) -> list[StudyRow]:
        """Every study with its trial counts and best value."""
        counts: dict[int, dict[TrialState, int]] = {}
        q = select(Trial.study_id, Trial.state, func.count()).group_by(Trial.study_id, Trial.state)
        for study_id, state, n in self._run(q):
            counts.setdefault(study_id, {})[state] = n
        best_q = (
            select(Trial.study_id, func.max(Trial.value), func.min(Trial.value))
            .where(Trial.state == TrialState.COMPLETE, Trial.value.is_not(None))
            .group_by(Trial.study_id)
        )
        best = {sid: (hi, lo) for sid, hi, lo in self._run(best_q)}
        rows = []
        for (study,) in self._run(select(Study).order_by(Study.id), orm=True):
            c = counts.get(study.id, {})
            hi, lo = best.get(study.id, (None, None))
            rows.append(
                StudyRow(
                    id=study.id,
                    name=study.name,
                    kind=study.kind,
                    state=study.state,
                    direction=study.direction,
                    metric=study.metric,
                    target_trials=study.target_trials,
                    done=c.get(TrialState.COMPLETE, 0) + c.get(TrialState.PRUNED, 0),
                    running=c.get(TrialState.RUNNING, 0),
                    failed=c.get(TrialState.FAIL, 0),
                    best=hi if study.direction == "maximize" else lo,
                    started_at=as_utc(study.started_at),
                    ended_at=as_utc(study.ended_at),
                )
            )
        return rows

    def study(self, name: str) -> Study | None:
        rows = self._run(select(Study).where(Study.name == name), orm=True)
        return rows[0][0] if rows else None

    def trials(self, study_id: int) -> list[tuple[int, int, TrialState, float | None]]:
        """(id, number, state, value) of every trial: the narrow row every poll reads."""
        state = type_coerce(Trial.state, String)  # the raw name: no per-row Enum processing
        q = select(Trial.id, Trial.number, state, Trial.value).where(Trial.study_id == study_id)
        return [(tid, n, STATES[name], value) for tid, n, name, value in self._run(q)]

    def trial_details(self, ids: list[int]) -> dict[int, tuple[Any, ...]]:
        """trial id -> (started_at, ended_at, params JSON, error) for the given trials."""
        out: dict[int, tuple[Any, ...]] = {}
        for start in range(0, len(ids), BULK_IN):
            chunk = ids[start : start + BULK_IN]
            q = select(Trial.id, Trial.started_at, Trial.ended_at, Trial.params, Trial.error).where(
                Trial.id.in_(chunk)
            )
            out.update({row[0]: tuple(row[1:]) for row in self._run(q)})
        return out

    def _metric_rows(
        self, study_id: int, names: list[str], ids: list[int]
    ) -> list[tuple[int, str, int, float]]:
        """(trial id, name, step, value) of the named metrics of the given trials of a
        study, by trial and step."""
        q = select(TrialMetric.trial_id, TrialMetric.name, TrialMetric.step, TrialMetric.value)
        q = q.where(TrialMetric.name.in_(names))
        if len(ids) > BULK_IN:
            wanted = set(ids)
            q = q.where(
                TrialMetric.trial_id.in_(select(Trial.id).where(Trial.study_id == study_id))
            )
        else:
            wanted = None
            q = q.where(TrialMetric.trial_id.in_(ids))
        rows = self._run(q.order_by(TrialMetric.trial_id, TrialMetric.step))
        return [row for row in rows if wanted is None or row[0] in wanted]

    def metric_curves(
        self, study_id: int, metric: str, ids: list[int]
    ) -> dict[int, list[tuple[int, float]]]:
        """trial id -> [(step, value)] of one metric, for the given trials of a study."""
        out: dict[int, list[tuple[int, float]]] = {tid: [] for tid in ids}
        for tid, _, step, value in self._metric_rows(study_id, [metric], ids):
            out[tid].append((step, value))
        return out

    def latest_metrics(
        self, study_id: int, names: list[str], ids: list[int]
    ) -> dict[int, dict[str, float]]:
        """trial id -> name -> latest value of the named metrics (as ``Store.final_metrics``
        takes them), for the given trials of a study."""
        out: dict[int, dict[str, float]] = {tid: {} for tid in ids}
        for tid, name, _, value in self._metric_rows(study_id, names, ids):
            out[tid][name] = value
        return out

    def curation(self, study: Study) -> tuple[dict[str, Any], dict[str, str]]:
        """A curate study as ``Store.summary`` shapes it (trials: params, state, metrics,
        attrs), and its output files by kind."""
        q = select(Trial).where(Trial.study_id == study.id).order_by(Trial.number)
        trials = [row for (row,) in self._run(q, orm=True)]
        metrics: dict[int, dict[str, float]] = {t.id: {} for t in trials}
        q = select(TrialMetric.trial_id, TrialMetric.name, TrialMetric.value).where(
            TrialMetric.trial_id.in_(list(metrics))
        )
        for tid, name, value in self._run(q):
            metrics[tid][name] = value
        rows = [
            {
                "params": t.params_dict,
                "state": t.state.value,
                "metrics": metrics[t.id],
                "attrs": t.attrs_dict,
                "error": t.error,
            }
            for t in trials
        ]
        q = select(Artifact.kind, Artifact.path).where(Artifact.study_id == study.id)
        artifacts = {kind: path for kind, path in self._run(q)}
        summary = {"study": {"name": study.name, "state": study.state.value}, "trials": rows}
        return summary, artifacts

    def labels_wanted(self, study_id: int) -> list[dict[str, Any]]:
        """What the running experiments' file oracles wait for (their ``labels_wanted``
        attr: query file, ids, images), oldest trial first."""
        q = (
            select(Trial.attrs)
            .where(Trial.study_id == study_id, Trial.state == TrialState.RUNNING)
            .order_by(Trial.number)
        )
        wanted = [json.loads(attrs or "{}").get("labels_wanted") for (attrs,) in self._run(q)]
        return [w for w in wanted if w]

    def al_rounds(self, study_id: int) -> list[ALRound]:
        q = select(ALRound).where(ALRound.study_id == study_id).order_by(ALRound.round)
        return [row for (row,) in self._run(q, orm=True)]


# -- the trials model: poll, diff by row key -----------------------------------------


COLUMNS = ("number", "state", "latest", "peak", "epoch", "duration", "params")
RULE = (
    "latest: the metric at the trial's last epoch; once the trial ends that is its value, "
    "the one `platform show`, `export` and the best-trial panel rank by. peak: the best "
    "epoch's value, for information only."
)
RULE_SHORT = "best = last epoch, as in show · peak = best epoch"
FRONT_COLUMN = "front"  # multi-objective studies: marks the trials on the Pareto front
FRONT_MARK = "★"
OBJECTIVE_PREFIX = "objective:"  # column key of each objective after the study metric


@dataclass
class TrialView:
    """What the TUI knows about one trial."""

    id: int
    number: int
    state: TrialState
    value: float | None
    started_at: datetime
    ended_at: datetime | None
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each objective

    def duration_s(self, now: datetime) -> float:
        return ((self.ended_at or now) - self.started_at).total_seconds()


@dataclass
class Changes:
    """The result of one poll: rows to add, cells to update (by row key), and whether the
    study-level panels (best params, best-so-far curve) need redrawing: a trial appeared,
    vanished, or changed state or value."""

    added: list[int] = field(default_factory=list)
    updated: dict[int, dict[str, str]] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)
    study_changed: bool = False


class TrialsModel:
    """The trials of one study, refreshed from a Reader and diffed by trial number.

    Only trials that are new, were running, or changed state are re-read in full (params,
    error, metric curve), so a poll of a study with 10,000 finished trials reads one
    narrow row per trial and nothing else.

    A multi-objective study also reads the latest value of each objective and keeps the
    Pareto front (``store.pareto_front``, as `platform show` prints it): the table gets a
    front marker column and one column per objective after the study metric.
    """

    def __init__(self, study: Study) -> None:
        self.study = study
        self.objectives = objectives_of(study)
        extra = [OBJECTIVE_PREFIX + name for name, _ in self.objectives[1:]]
        self.columns: tuple[str, ...] = (
            (*COLUMNS[:1], FRONT_COLUMN, *COLUMNS[1:4], *extra, *COLUMNS[4:])
            if self.objectives
            else COLUMNS
        )
        self.trials: dict[int, TrialView] = {}
        self.cells: dict[int, tuple[str, ...]] = {}
        self.best: TrialView | None = None
        self.front: list[int] = []  # trial numbers on the Pareto front, by first objective
        self._values: dict[str, set[str]] = {}  # param -> distinct JSON values seen
        self._varying: list[str] = []
        self.now = datetime.now(UTC)  # the time of the last poll: running trials' durations

    @property
    def maximize(self) -> bool:
        return self.study.direction != "minimize"

    def poll(self, reader: Reader, now: datetime | None = None) -> Changes:
        """Read the store and return what changed since the last poll."""
        now = self.now = now or datetime.now(UTC)
        rows = reader.trials(self.study.id)
        seen: set[int] = set()
        stale: list[tuple[int, int, TrialState, float | None]] = []
        study_changed = not self.cells  # the first poll draws everything
        for row in rows:
            tid, number, state, value = row
            seen.add(number)
            old = self.trials.get(number)
            moved = old is None or old.id != tid or old.state != state or old.value != value
            if moved or old.state is TrialState.RUNNING:
                stale.append(row)
            study_changed |= moved
        changes = Changes(removed=[n for n in self.trials if n not in seen])
        for number in changes.removed:
            del self.trials[number], self.cells[number]
        if stale:
            ids = [row[0] for row in stale]
            details = reader.trial_details(ids)
            curves = reader.metric_curves(self.study.id, self.study.metric, ids)
            names = [name for name, _ in self.objectives]
            finals = reader.latest_metrics(self.study.id, names, ids) if names else {}
            for tid, number, state, value in stale:
                if tid not in details:  # deleted between the two reads: next poll
                    continue
                started, ended, params_json, error = details[tid]
                params = json.loads(params_json or "{}")
                self.trials[number] = TrialView(
                    id=tid,
                    number=number,
                    state=state,
                    value=value,
                    started_at=as_utc(started),
                    ended_at=as_utc(ended),
                    params=params,
                    error=error,
                    curve=curves.get(tid, []),
                    metrics=finals.get(tid, {}),
                )
                for key, v in params.items():
                    self._values.setdefault(key, set()).add(json.dumps(v, sort_keys=True))
        varying = self._varying_keys()
        renumber = varying != self._varying
        self._varying = varying
        redraw = {r[1] for r in stale if r[1] in self.trials}
        if self.objectives and (study_changed or changes.removed):
            redraw |= self._update_front(redraw, bool(changes.removed))
        for number in self.trials if renumber else sorted(redraw):
            cells = self._cells(self.trials[number], now)
            old = self.cells.get(number)
            if old is None:
                changes.added.append(number)
            elif old != cells:
                pairs = zip(self.columns, cells, old, strict=True)
                changes.updated[number] = {col: new for col, new, was in pairs if new != was}
            self.cells[number] = cells
        if study_changed or changes.removed:
            self.best = self._best()
            changes.study_changed = True
        changes.added.sort()
        return changes

    def _update_front(self, changed: set[int], removed: bool) -> set[int]:
        """Recompute the Pareto front after the trials ``changed`` were re-read; returns
        the trials still there that joined or left it.

        While no trial of the old front changed or vanished, every other old trial stays
        dominated, so the new front is the front of the old one and the changed trials.
        """
        old = set(self.front)
        if removed or old & changed:
            candidates = self.trials.values()
        else:
            candidates = [self.trials[n] for n in old | changed if n in self.trials]
        rows = [
            {"number": t.number, "state": t.state.value, "metrics": t.metrics} for t in candidates
        ]
        self.front = pareto_front(rows, [list(o) for o in self.objectives])
        return (old ^ set(self.front)) & self.trials.keys()

    def _varying_keys(self) -> list[str]:
        keys = list(self._values)
        if len(self.trials) < 2:
            return keys
        return [k for k in keys if len(self._values[k]) > 1]

    def _best(self) -> TrialView | None:
        done = [
            t
            for t in self.trials.values()
            if t.state is TrialState.COMPLETE and t.value is not None
        ]
        if not done:
            return None
        pick = max if self.maximize else min
        return pick(done, key=lambda t: t.value)

    def _cells(self, t: TrialView, now: datetime) -> tuple[str, ...]:
        values = [v for _, v in t.curve]
        peak = (max if self.maximize else min)(values) if values else None
        params = " ".join(f"{k}={fmt_param(t.params[k])}" for k in self._varying if k in t.params)
        cells = (
            str(t.number),
            t.state.value,
            fmt_value(values[-1] if values else None),
            fmt_value(peak),
            str(t.curve[-1][0]) if t.curve else "",
            fmt_seconds(t.duration_s(now)),
            params,
        )
        if not self.objectives:
            return cells
        mark = FRONT_MARK if t.number in self.front else ""
        extra = tuple(fmt_objective(t.metrics.get(name)) for name, _ in self.objectives[1:])
        return (*cells[:1], mark, *cells[1:4], *extra, *cells[4:])

    def sort_key(self, number: int, column: str, reverse: bool = False) -> tuple[Any, ...]:
        """A key ordering trials by a column's underlying value; blanks sort last either
        way (``reverse``: the key is for a descending sort)."""
        t = self.trials[number]
        values = [v for _, v in t.curve]
        raw: Any = {
            "number": t.number,
            "state": t.state.value,
            "latest": values[-1] if values else None,
            "peak": ((max if self.maximize else min)(values)) if values else None,
            "epoch": t.curve[-1][0] if t.curve else None,
            "duration": t.duration_s(self.now),
            "params": self.cells[number][-1],
        }[column]
        return ((raw is None) != reverse, raw if raw is not None else 0, t.number)

    @property
    def params(self) -> list[str]:
        """The names of every param seen, in first-seen order."""
        return list(self._values)

    def best_so_far(self) -> tuple[list[int], list[float]]:
        """The study's best value by trial number, as the corners of a step line (a point
        where the best improved and at the last complete trial, not one per trial)."""
        xs: list[int] = []
        ys: list[float] = []
        last = None
        for number in sorted(self.trials):
            t = self.trials[number]
            if t.state is not TrialState.COMPLETE or t.value is None:
                continue
            last = number
            if not ys or (t.value > ys[-1] if self.maximize else t.value < ys[-1]):
                if ys:
                    xs.append(number)
                    ys.append(ys[-1])
                xs.append(number)
                ys.append(t.value)
        if last is not None and xs[-1] != last:
            xs.append(last)
            ys.append(ys[-1])
        return xs, ys


# -- the `/` filter: states and param conditions --------------------------------------

CONDITION = re.compile(r"^([A-Za-z_][\w.\-]*)(<=|>=|!=|==|=|<|>)(.+)$")
ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
FILTER_HELP = (
    "states (run, complete, fail, ...) and param conditions (depth=3, lr<0.01, "
    "opt!=sgd), e.g. `complete depth>=3`"
)


@dataclass(frozen=True)
class TrialFilter:
    """Trials in one of ``states`` (any, when empty) whose params meet every condition."""

    text: str
    states: frozenset[str] = frozenset()
    conditions: tuple[tuple[str, str, str], ...] = ()

    def matches(self, trial: TrialView) -> bool:
        if self.states and trial.state.value not in self.states:
            return False
        return all(
            name in trial.params and _meets(trial.params[name], op, wanted)
            for name, op, wanted in self.conditions
        )

    def unknown(self, params: list[str]) -> list[str]:
        """The params the conditions name that no trial has."""
        return [name for name, _, _ in self.conditions if name not in params]


def parse_filter(text: str) -> TrialFilter | None:
    """The filter the `/` box holds (None: empty). Words are state prefixes or conditions
    ``NAME OP VALUE`` (OP: = != < <= > >=); raises ValueError naming a word that is
    neither."""
    text = re.sub(r"\s*(<=|>=|!=|==|=|<|>)\s*", r"\1", text.replace(",", " ")).strip()
    if not text:
        return None
    states: set[str] = set()
    conditions = []
    for word in text.split():
        found = CONDITION.match(word)
        if found:
            name, op, wanted = found.groups()
            conditions.append((name, "=" if op == "==" else op, wanted))
            continue
        matched = {s.value for s in TrialState if s.value.startswith(word.lower())}
        if not matched:
            raise ValueError(f"'{word}' is no state or condition; filter by {FILTER_HELP}")
        states |= matched
    return TrialFilter(text, frozenset(states), tuple(conditions))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _meets(actual: Any, op: str, wanted: str) -> bool:
    """Whether a param's value meets ``op wanted``: numbers compare as numbers, anything
    else as text (case-insensitive; only = and != apply)."""
    a, w = _number(actual), _number(wanted)
    if op in ORDERING:
        return a is not None and w is not None and ORDERING[op](a, w)
    if a is not None and w is not None:
        equal = a == w
    else:
        text = json.dumps(actual) if isinstance(actual, bool | list | dict) else str(actual)
        equal = text.lower() == wanted.lower()
    return equal if op == "=" else not equal


def plural(n: int, noun: str) -> str:
    """``1 study``, ``2 studies``, ``3 rounds``."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def nice_ticks(lo: float, hi: float, count: int = 5, whole: bool = False) -> list[float]:
    """About ``count`` round ticks (steps of 1, 2, 2.5 or 5 x 10^k; whole numbers, no
    2.5, when ``whole``) from the last at or below ``lo`` to the first at or above ``hi``."""
    raw = max((hi - lo) / (count - 1), 1e-12)
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if whole else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw * 0.999)
    step = max(step, 1.0) if whole else step
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(tick: float, ticks: list[float]) -> str:
    """A tick's label with as many decimals as its axis's step needs."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > 1e-9:
        decimals += 1
    return f"{tick:.{decimals}f}"


def axis(values: list[float], whole: bool = False) -> list[float]:
    """The ticks of an axis that fits ``values`` (ends on round numbers; a flat line gets
    a small margin); [] for no values."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        pad = max(abs(hi) * 0.05, 0.01) if not whole else 1
        lo, hi = lo - pad, hi + pad
        if min(values) >= 0 and max(values) <= 1:
            lo, hi = max(lo, 0.0), min(hi, 1.0)
    return nice_ticks(lo, hi, whole=whole)
