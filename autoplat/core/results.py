"""Study views for scripts, notebooks and the CLI: the trials table, the per-epoch history,
the best trial and Pareto front, per-seed active-learning curves and curation outputs.

``StudyView`` reads the store each time it is asked (a running study's view grows); the
``*_rows`` functions give the same data as plain JSON-able rows for ``show --json/--csv``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from autoplat.core.database import BASELINE_KEY, OBJECTIVES_KEY
from autoplat.core.store import (
    Store,
    Study,
    Trial,
    TrialMetric,
    _guarded,
    objectives,
    pareto_front,
)

if TYPE_CHECKING:
    import pandas as pd

HISTORY_COLUMNS = ["trial", "step", "metric", "value"]


@_guarded
def _study_metrics(store: Store, study_id: int) -> list[tuple[int, int, str, float]]:
    """Every metric row of a study as (trial number, step, name, value), in one query."""
    query = (
        select(Trial.number, TrialMetric.step, TrialMetric.name, TrialMetric.value)
        .join(Trial, Trial.id == TrialMetric.trial_id)
        .where(Trial.study_id == study_id)
        .order_by(Trial.number, TrialMetric.step, TrialMetric.name)
    )
    with store.session() as s:
        return [tuple(row) for row in s.exec(query)]


def history_rows(store: Store, study: Study) -> list[dict[str, Any]]:
    """The per-epoch history, long format: trial (number), step, metric, value."""
    return [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in _study_metrics(store, study.id)]


def trial_rows(store: Store, study: Study) -> list[dict[str, Any]]:
    """One flat row per trial: number, state, params_*, value, final_* (each metric's last
    value), best_* (each objective's best over epochs), epochs, started/ended, duration_s,
    node, error."""
    steps: dict[int, dict[int, dict[str, float]]] = {}
    for number, step, name, value in _study_metrics(store, study.id):
        steps.setdefault(number, {}).setdefault(step, {})[name] = value
    goals = objectives(study)
    rows = []
    for t in store.trials(study.id):
        history = steps.get(t.number, {})
        final: dict[str, float] = {}
        for step in sorted(history):
            final.update(history[step])
        row: dict[str, Any] = {"number": t.number, "state": t.state.value}
        row |= {f"params_{k}": v for k, v in t.params_dict.items()}
        row["value"] = t.value
        row |= {f"final_{k}": v for k, v in sorted(final.items())}
        for name, direction in goals:
            values = [m[name] for m in history.values() if name in m]
            pick = max if direction == "maximize" else min
            row[f"best_{name}"] = pick(values) if values else None
        row |= {
            "epochs": max(history) if history else 0,
            "started_at": t.started_at.isoformat(),
            "ended_at": t.ended_at.isoformat() if t.ended_at else None,
            "duration_s": t.duration_s,
            "node": t.node,
            "error": t.error,
        }
        rows.append(row)
    return rows


def al_rows(store: Store, study: Study) -> list[dict[str, Any]]:
    """Every round of an active-learning study: acquisition, seed, round, n_labeled, its
    metrics (test_accuracy, ...), and the ids it queried with their labels."""
    rows = []
    for r in store.al_rounds(study.id):
        metrics = r.metrics_dict
        queried, labels = metrics.pop("queried", []), metrics.pop("labels", [])
        rows.append(
            {
                "acquisition": r.acquisition,
                "seed": r.seed,
                "round": r.round,
                "n_labeled": r.n_labeled,
                **metrics,
                "queried": queried,
                "labels": labels,
            }
        )
    return rows


def al_curves_by_seed(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[dict]]]:
    """``al_rows`` nested for JSON: acquisition -> seed (as a string) -> rounds in order."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        point = {k: v for k, v in row.items() if k not in ("acquisition", "seed")}
        out.setdefault(row["acquisition"], {}).setdefault(str(row["seed"]), []).append(point)
    return out


def curation_info(store: Store, study: Study) -> dict[str, Any]:
    """A curate study's outputs: records, kept (in all and per scorer), the paths of its
    scores and kept files, and each scorer's summary."""
    summary = store.summary(study)
    files = {a.kind: a.path for a in store.artifacts(study.id)}
    totals: dict[str, Any] = {}
    scorers = {}
    for t in summary["trials"]:
        totals = t["attrs"].get("run", totals)
        scorers[t["params"].get("scorer", str(t["number"]))] = {
            "state": t["state"],
            "records": t["metrics"].get("records"),
            "kept": t["metrics"].get("kept"),
            "summary": t["attrs"].get("summary", {}),
            "error": t["error"],
        }
    return {
        "study": study.name,
        "state": study.state.value,
        "records": totals.get("records"),
        "kept": totals.get("kept"),
        "scores_path": files.get("scores"),
        "kept_path": files.get("kept"),
        "scorers": scorers,
    }


def to_csv(rows: list[dict[str, Any]], first: list[str] | None = None) -> str:
    """Rows as CSV: the ``first`` columns, then the others in first-seen order; lists and
    dicts as JSON."""
    columns = dict.fromkeys(first or [])
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}
        )
    return buffer.getvalue()


def list_rows(store: Store) -> list[dict[str, Any]]:
    """One row per study of a store: name, kind, state, metric, direction, trials, best."""
    rows = []
    for study in store.studies():
        best = store.best_trial(study)
        rows.append(
            {
                "name": study.name,
                "kind": study.kind,
                "state": study.state.value,
                "metric": study.metric,
                "direction": study.direction,
                "trials": len(store.trials(study.id)),
                "target_trials": study.target_trials,
                "best_value": best.value if best else None,
                "started_at": study.started_at.isoformat(),
                "ended_at": study.ended_at.isoformat() if study.ended_at else None,
            }
        )
    return rows


def checkpoint_folder(store: Store, study: Study) -> Path | None:
    """The folder where a search study's trials saved their weights (as run_study chose it
    from the stored config), or None."""
    from autoplat.core.runner import beside_store

    cfg = json.loads(study.config or "{}").get("study", {})
    if study.kind != "search" or cfg.get("checkpoints") == "none":
        return None
    base = Path(cfg["checkpoint_dir"]).expanduser() if cfg.get("checkpoint_dir") else None
    return ((base or beside_store(store.url, "checkpoints")) / study.name).resolve()


def delete_study(store: Store, name: str) -> dict[str, Any]:
    """Delete a study's rows, then those of its recorded files that lie in its own
    checkpoint folder (the folder too, once empty). Other files are never touched: they
    are listed as kept."""
    study = store.get_study(name)
    folder = checkpoint_folder(store, study)
    trials = len(store.trials(study.id))
    paths = store.delete_study(name)
    removed, kept = [], []
    for path in paths:
        file = Path(path).resolve()
        if folder is not None and file.is_relative_to(folder) and file.is_file():
            file.unlink()
            removed.append(path)
        else:
            kept.append(path)
    if folder is not None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return {"study": name, "trials": trials, "removed_files": removed, "kept_files": kept}


class StudyView:
    """One study of a store, read on each call (``autoplat.load_study`` returns one)."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self._study = store.get_study(name)

    @property
    def study(self) -> Study:
        """The study's row, read again (its state changes while it runs)."""
        self._study = self.store.get_study(self.name)
        return self._study

    @property
    def kind(self) -> str:
        return self._study.kind

    @property
    def state(self) -> str:
        return self.study.state.value

    @property
    def direction(self) -> str:
        return self._study.direction

    @property
    def metric(self) -> str:
        return self._study.metric

    @property
    def config(self) -> dict[str, Any]:
        """The config the study ran with (a dict with the TOML's structure)."""
        stored = json.loads(self._study.config).items()
        return {k: v for k, v in stored if k not in (OBJECTIVES_KEY, BASELINE_KEY)}

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return objectives(self._study)

    def __repr__(self) -> str:
        return f"StudyView({self.name!r}, kind={self.kind!r}, storage={self.store.display_url!r})"

    def summary(self) -> dict[str, Any]:
        """What ``platform show --json`` prints for a search: study, trials, best."""
        return self.store.summary(self.study)

    def trials(self) -> list[dict[str, Any]]:
        """``trials_dataframe`` as a list of dicts (no pandas needed)."""
        return trial_rows(self.store, self.study)

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial: number, state, params_*, value, final_*, best_*, epochs,
        started_at, ended_at, duration_s, node, error."""
        import pandas as pd

        frame = pd.DataFrame(self.trials())
        for column in ("started_at", "ended_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    def history(self) -> pd.DataFrame:
        """Every reported metric of every trial, long format: trial, step, metric, value
        (``history().pivot_table(index="step", columns="trial", values="value")`` on one
        metric gives learning curves)."""
        import pandas as pd

        return pd.DataFrame(history_rows(self.store, self.study), columns=HISTORY_COLUMNS)

    @property
    def best_trial(self) -> dict[str, Any] | None:
        """The best completed trial (number, params, value, metrics, ...), or None."""
        return self.summary()["best"]

    @property
    def best_params(self) -> dict[str, Any] | None:
        best = self.best_trial
        return best["params"] if best else None

    @property
    def best_value(self) -> float | None:
        best = self.best_trial
        return best["value"] if best else None

    def pareto_front(self) -> list[dict[str, Any]]:
        """The completed trials no other dominates on the objectives (with one objective:
        the best trial), in the order of the first objective."""
        summary = self.summary()
        rows = {row["number"]: row for row in summary["trials"]}
        for row in rows.values():  # the study metric's value is the trial's value
            if row["value"] is not None:
                row["metrics"].setdefault(self.metric, row["value"])
        numbers = pareto_front(list(rows.values()), [list(o) for o in self.objectives])
        return [rows[n] for n in numbers]

    def al_curves(self) -> pd.DataFrame:
        """Every round of an active-learning study: acquisition, seed, round, n_labeled,
        its metrics, and the queried ids with their labels (lists)."""
        import pandas as pd

        return pd.DataFrame(al_rows(self.store, self.study))

    def curation(self) -> dict[str, Any]:
        """A curate study's records, kept counts, scores/kept file paths, per scorer."""
        return curation_info(self.store, self.study)

    def to_optuna(self, storage: str, name: str | None = None) -> Any:
        """Write the study into an Optuna storage (e.g. ``sqlite:///optuna.db``), for
        optuna-dashboard and ``optuna.visualization``; returns the ``optuna.Study``."""
        from autoplat.core.optuna_export import export_to_optuna

        return export_to_optuna(self.store, self.study, storage, name)
