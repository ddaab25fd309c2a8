"""`platform` commands that take results out of the store: `show --csv/--history`,
`delete`, `copy` and `export-optuna`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autoplat.core.errors import AutoplatError
from autoplat.core.results import (
    HISTORY_COLUMNS,
    al_rows,
    delete_study,
    history_rows,
    to_csv,
    trial_rows,
)
from autoplat.core.store import DEFAULT_URL, Store, Study


def _storage(args: argparse.Namespace) -> str:
    return args.storage or DEFAULT_URL


def show_rows(store: Store, study: Study, args: argparse.Namespace) -> int:
    """``show --csv`` (the trials table; an AL study's rounds) and ``show --history``
    (every metric of every epoch: CSV, or JSON with --json)."""
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
    store = Store(_storage(args))
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

    source = Store(_storage(args), create=False)
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

    store = Store(_storage(args), create=False)
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


def add_commands(sub: Any) -> None:
    """The `delete`, `copy` and `export-optuna` subcommands."""
    from autoplat.cli import add_command, add_storage_option

    db = "--storage sqlite:///runs/quickstart.db"
    p = add_command(
        sub,
        "delete",
        "delete a study's rows (and its own checkpoint files)",
        f"platform delete old-search {db} --yes",
    )
    p.add_argument("study", help="study name")
    add_storage_option(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    p.set_defaults(func=cmd_delete)

    p = add_command(
        sub,
        "copy",
        "copy a study to another store (SQLite or PostgreSQL)",
        f"platform copy quickstart {db} \\\n    --to postgresql+psycopg://me@dbhost/runs",
    )
    p.add_argument("study", help="study name")
    p.add_argument("--to", required=True, metavar="URL", help="SQLAlchemy URL of the target store")
    p.add_argument("--name", metavar="NAME", help="the copy's name (default: the same)")
    add_storage_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_copy)

    p = add_command(
        sub,
        "export-optuna",
        "write a study to an Optuna storage (optuna-dashboard, plots)",
        f"platform export-optuna quickstart {db} \\\n    --to sqlite:///optuna.db",
    )
    p.add_argument("study", help="study name")
    p.add_argument(
        "--to", required=True, metavar="URL", help="Optuna storage URL, e.g. sqlite:///optuna.db"
    )
    p.add_argument("--name", metavar="NAME", help="the Optuna study's name (default: the same)")
    add_storage_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_export_optuna)
