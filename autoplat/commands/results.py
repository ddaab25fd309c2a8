"""Commands that read or move results in the store: `runs`, `show`, `delete`, `copy`,
`export-optuna`; and the printers `search`, `al` and `curate` end with."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from autoplat.cli import add_storage_option, out, storage
from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.errors import AutoplatError
from autoplat.core.hookspecs import Command
from autoplat.views import (
    al_table,
    curate_table,
    leaderboard,
    params_text,
    pareto_table,
    runs_table,
)

if TYPE_CHECKING:
    from autoplat.core.database import Database
    from autoplat.core.store import Store, Study

DB = "--storage sqlite:///runs/quickstart.db"


def print_study(store: Database, study: Any, top: int | None) -> None:
    summary = store.summary(study)
    out.print(leaderboard(summary, top))
    if "pareto_front" in summary:
        out.print(pareto_table(summary))
    counts = {k: v for k, v in summary["study"]["trial_counts"].items() if v}
    out.print("trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for t in summary["trials"]:
        if t["state"] == "fail":
            out.print(f"trial {t['number']} failed: {t['error']}", markup=False)
    best = summary["best"]
    if best:
        out.print(f"best trial {best['number']}: " + params_text(best["params"]))
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in sorted(best["metrics"].items()))
        out.print(f"best metrics: {metrics}")
        for kind, path in best["artifacts"].items():
            out.print(f"best {kind}: {path}")


def print_curate_study(store: Store, study: Study) -> None:
    summary = store.summary(study)
    artifacts = {a.kind: a.path for a in store.artifacts(study.id)}
    out.print(curate_table(summary, artifacts))
    for t in summary["trials"]:
        if t["state"] == "fail":
            out.print(f"{t['params'].get('scorer')} failed: {t['error']}", markup=False)


def print_al_study(store: Store, study: Study, curves: dict[str, Any]) -> None:
    """Learning curves (mean +- std over seeds at each label count) and AULC per acquisition."""
    from autoplat.core.store import SUPERSEDED

    table = al_table(study.name, study.metric, curves)
    out.print(table)
    counts_by_state = {k: v for k, v in store.summary(study)["study"]["trial_counts"].items() if v}
    out.print("experiments: " + ", ".join(f"{v} {k}" for k, v in counts_by_state.items()))
    for t in store.trials(study.id):
        if t.state == "fail" and SUPERSEDED not in t.attrs_dict:
            out.print(
                f"{t.params_dict['acquisition']} seed {t.params_dict['seed']} failed: {t.error}",
                markup=False,
            )


def al_json(store: Store, study: Study, curves: dict[str, Any]) -> dict[str, Any]:
    """An AL study as JSON: the study, mean/std curves, and every seed's rounds (labels,
    metrics, queried ids and their labels) under ``per_seed``."""
    from autoplat.core.results import al_curves_by_seed, al_rows

    per_seed = al_curves_by_seed(al_rows(store, study))
    return {"study": store.summary(study)["study"], "curves": curves, "per_seed": per_seed}


def stored_line(store: Store, study: Study) -> str:
    """Where the results are, and the command that shows them again (with its --storage)."""
    option = "" if store.url == DEFAULT_URL else f" --storage {store.display_url}"
    return (
        f"results stored in {store.display_url} (study '{study.name}'); "
        f"view again with: platform show {study.name}{option}"
    )


def cmd_runs(args: argparse.Namespace) -> int:
    from autoplat.core.database import Database

    store = Database(storage(args))
    summaries = []
    for study in store.study_rows():
        summary = store.summary(study)
        best = summary["best"]
        summaries.append(summary["study"] | {"best": best["value"] if best else None})
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    table = runs_table(summaries, store.display_url)
    out.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from autoplat.core.database import Database

    reader = Database(storage(args))  # SQLAlchemy Core only: leaderboards start fast
    study = reader.read_study(args.study)
    if study.kind in ("al", "curate") or args.csv or args.history:
        return show_from_store(args)
    if args.json:
        print(json.dumps(top_trials(reader.summary(study), args.top), indent=2))
    else:
        print_study(reader, study, args.top)
    return 0


def show_from_store(args: argparse.Namespace) -> int:
    """``show`` of an AL or curate study, ``--csv`` and ``--history``: through the Store."""
    from autoplat.core.store import Store

    store = Store(storage(args), create=False)
    study = store.get_study(args.study)
    if args.csv or args.history:
        return show_rows(store, study, args)
    if study.kind == "al":
        from autoplat.core.al_study import learning_curves

        curves = learning_curves(store.al_rounds(study.id))
        if args.json:
            print(json.dumps(al_json(store, study, curves), indent=2))
        else:
            print_al_study(store, study, curves)
        return 0
    if args.json:
        summary = store.summary(study)
        summary["artifacts"] = {a.kind: a.path for a in store.artifacts(study.id)}
        print(json.dumps(summary, indent=2))
    else:
        print_curate_study(store, study)
    return 0


def top_trials(summary: dict[str, Any], top: int | None) -> dict[str, Any]:
    """``summary`` with only its best ``top`` completed trials, ranked (all when None), as
    the leaderboard of `show --top N` lists them."""
    if top is None:
        return summary
    done = [t for t in summary["trials"] if t["state"] == "complete" and t["value"] is not None]
    done.sort(key=lambda t: t["value"], reverse=summary["study"]["direction"] == "maximize")
    return summary | {"trials": done[:top]}


def show_rows(store: Store, study: Study, args: argparse.Namespace) -> int:
    """``show --csv`` (the trials table; an AL study's rounds) and ``show --history``
    (every metric of every epoch: CSV, or JSON with --json)."""
    from autoplat.core.results import HISTORY_COLUMNS, al_rows, history_rows, to_csv, trial_rows

    if args.history:
        rows = history_rows(store, study)
        if args.json:
            print(json.dumps({"study": study.name, "history": rows}, indent=2))
        else:
            sys.stdout.write(to_csv(rows, HISTORY_COLUMNS))
        return 0
    if args.json:
        raise AutoplatError("--csv and --json: pick one (--json alone prints the summary)")
    if study.kind == "al":
        rows, first = al_rows(store, study), ["acquisition", "seed", "round", "n_labeled"]
    else:
        rows, first = trial_rows(store, study), ["number", "state"]
    sys.stdout.write(to_csv(rows, first))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from autoplat.core.store import Store

    store = Store(storage(args))
    study = store.get_study(args.study)
    if not args.yes:
        if not sys.stdin.isatty():
            raise AutoplatError(
                f"not deleting study '{study.name}' unasked: stdin is not a terminal; pass "
                "--yes to delete it"
            )
        trials = len(store.trials(study.id))
        answer = input(
            f"delete study '{study.name}' ({study.kind}, {trials} trials) from "
            f"{store.display_url}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    from autoplat.core.results import delete_study

    done = delete_study(store, study.name)
    if args.json:
        print(json.dumps(done, indent=2))
        return 0
    print(
        f"deleted study '{done['study']}' ({done['trials']} trials) from {store.display_url}; "
        f"removed {len(done['removed_files'])} checkpoint files"
    )
    for path in done["kept_files"]:
        print(f"kept (not in the study's checkpoint folder): {path}")
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from autoplat.core.store import Store

    source = Store(storage(args), create=False)
    try:
        make_url(args.to)
    except ArgumentError:
        raise AutoplatError(
            f"--to '{args.to}' is not a valid SQLAlchemy URL; use e.g. sqlite:///other.db or "
            "postgresql+psycopg://user@host/db"
        ) from None
    target = Store(args.to)
    copy = source.copy_study(args.study, target, args.name)
    trials = len(target.trials(copy.id))
    if args.json:
        print(
            json.dumps(
                {
                    "study": args.study,
                    "to": target.display_url,
                    "name": copy.name,
                    "trials": trials,
                },
                indent=2,
            )
        )
    else:
        print(
            f"copied study '{args.study}' ({trials} trials) to {target.display_url} as "
            f"'{copy.name}'"
        )
    return 0


def cmd_export_optuna(args: argparse.Namespace) -> int:
    from autoplat.core.optuna_export import export_to_optuna
    from autoplat.core.store import Store

    store = Store(storage(args), create=False)
    study = store.get_study(args.study)
    target = export_to_optuna(store, study, args.to, args.name)
    summary = {
        "study": study.name,
        "to": args.to,
        "name": target.study_name,
        "trials": len(target.trials),
        "directions": [d.name.lower() for d in target.directions],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote study '{study.name}' ({summary['trials']} trials) to the Optuna storage "
            f"{args.to} as '{target.study_name}'; open it with: optuna-dashboard {args.to}"
        )
    return 0


def _runs_arguments(p: argparse.ArgumentParser) -> None:
    add_storage_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name")
    add_storage_option(p)
    p.add_argument("--top", type=int, default=None, metavar="N", help="show only the best N trials")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--csv", action="store_true", help="print the trials table (an AL study: its rounds) as CSV"
    )
    p.add_argument(
        "--history",
        action="store_true",
        help="print every metric of every epoch (trial, step, metric, value): CSV, or --json",
    )


def _delete_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name")
    add_storage_option(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print what was deleted as JSON")


def _copy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name")
    p.add_argument("--to", required=True, metavar="URL", help="SQLAlchemy URL of the target store")
    p.add_argument("--name", metavar="NAME", help="the copy's name (default: the same)")
    add_storage_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _export_optuna_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name")
    p.add_argument(
        "--to", required=True, metavar="URL", help="Optuna storage URL, e.g. sqlite:///optuna.db"
    )
    p.add_argument("--name", metavar="NAME", help="the Optuna study's name (default: the same)")
    add_storage_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")


COMMANDS = (
    Command("runs", "list studies in the store", f"platform runs {DB}", _runs_arguments, cmd_runs),
    Command(
        "show",
        "print a study's leaderboard and best params",
        f"platform show quickstart {DB} --top 5\nplatform show quickstart {DB} --csv",
        _show_arguments,
        cmd_show,
    ),
    Command(
        "delete",
        "delete a study's rows (and its own checkpoint files)",
        f"platform delete old-search {DB} --yes",
        _delete_arguments,
        cmd_delete,
    ),
    Command(
        "copy",
        "copy a study to another store (SQLite or PostgreSQL)",
        f"platform copy quickstart {DB} \\\n    --to postgresql+psycopg://me@dbhost/runs",
        _copy_arguments,
        cmd_copy,
    ),
    Command(
        "export-optuna",
        "write a study to an Optuna storage (optuna-dashboard, plots)",
        f"platform export-optuna quickstart {DB} \\\n    --to sqlite:///optuna.db",
        _export_optuna_arguments,
        cmd_export_optuna,
    ),
)
