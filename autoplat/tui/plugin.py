"""Registers `platform tui` through the same hook third-party commands use."""

from __future__ import annotations

import argparse

from autoplat.core.hookspecs import hookimpl
from autoplat.core.store import DEFAULT_URL


def _interval(text: str) -> float:
    value = float(text)
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds from 0.05 to 3600")
    return value


def _run(args: argparse.Namespace) -> int:
    from autoplat.tui.app import run_tui  # Textual loads only when the command runs

    return run_tui(args)


@hookimpl
def register_commands(cli) -> None:
    """Add `platform tui [--storage URL] [--study NAME] [--interval SECONDS]`."""
    from autoplat.cli import HelpFormatter  # keeps the example's lines

    p = cli.add_parser(
        "tui",
        help="watch studies live in the terminal (read-only)",
        description="Watch the studies of a results store live: trials, metrics, best params. "
        "Keys: Enter opens, / filters, s sorts, ? help, d light/dark, q quits.",
        epilog="example:\n  platform tui --storage sqlite:///runs/quickstart.db --study quickstart",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help=f"SQLAlchemy URL of the results store (default {DEFAULT_URL})",
    )
    p.add_argument("--study", help="open this study directly (waits for it to appear)")
    p.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="how often to poll the store (default 1)",
    )
    p.set_defaults(func=_run)
