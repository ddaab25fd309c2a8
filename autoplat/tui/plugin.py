"""Registers `platform tui` through the same hook every command uses."""

from __future__ import annotations

import argparse

from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.hookspecs import Command, Register, hookimpl


def _interval(text: str) -> float:
    value = float(text)
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds from 0.05 to 3600")
    return value


def _run(args: argparse.Namespace) -> int:
    from autoplat.tui.app import run_tui  # Textual loads only when the command runs

    return run_tui(args)


def _arguments(p: argparse.ArgumentParser) -> None:
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


TUI = Command(
    "tui",
    "watch studies live in the terminal (read-only)",
    "platform tui --storage sqlite:///runs/quickstart.db --study quickstart",
    _arguments,
    _run,
    description="Watch the studies of a results store live: trials, metrics, best params. "
    "Keys: Enter opens, / filters, s sorts, ? help, d light/dark, q quits.",
)


@hookimpl
def register_commands(register: Register[Command]) -> None:
    """Register `platform tui [--storage URL] [--study NAME] [--interval SECONDS]`."""
    register(TUI)
