"""`platform experts`, the MoDE plugin's command: each data expert's model and their
weighted ensemble, zero-shot on a test set. Light: the evaluation imports on run."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.hookspecs import Command


def run(args: argparse.Namespace) -> int:
    from autoplat.core.store import Store
    from autoplat.plugins.scorers.embedding.experts import evaluate_experts

    out = Console(highlight=False, soft_wrap=True)
    task = [c.strip() for c in args.classes.split(",")] if args.classes else None
    store = Store(args.storage or DEFAULT_URL, create=False)
    report = evaluate_experts(store, args.study, args.curation, task)
    if args.json:
        out.print(json.dumps(report.to_dict(), indent=2), markup=False)
        return 0
    table = Table(
        title=f"data experts of '{report.study}' (MoDE weights from '{report.curation}', "
        f"rule {report.weighting}) · "
        f"zero-shot accuracy on {report.test_images} test images"
    )
    for column in ("expert", "trial", "weight", "accuracy"):
        table.add_column(column)
    for e in report.experts:
        table.add_row(str(e.expert), str(e.trial), f"{e.weight:.3f}", f"{e.accuracy:.4f}")
    table.add_row("uniform ensemble", "", "", f"{report.uniform_accuracy:.4f}")
    table.add_row("MoDE ensemble", "", "", f"{report.weighted_accuracy:.4f}")
    table.add_row("best single expert", "", "", f"{report.best_expert_accuracy:.4f}")
    out.print(table)
    out.print(f"classes: {', '.join(report.classes)}")
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a search study over [space] dataset.expert")
    p.add_argument(
        "--curation",
        required=True,
        metavar="STUDY",
        help="the curate study whose mode scorer made the experts",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help=f"SQLAlchemy URL of the results store (default {DEFAULT_URL})",
    )
    p.add_argument(
        "--classes",
        metavar="A,B,...",
        help="the task: comma-separated class names (default: every class)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


EXPERTS = Command(
    "experts",
    "MoDE: each data expert's model and their weighted ensemble, zero-shot on test",
    "platform experts mode-experts --curation mode-captions \\\n    --classes circle,square",
    arguments,
    run,
)
