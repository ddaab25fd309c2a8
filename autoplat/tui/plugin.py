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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: give a port number from 1 to 65535")
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
    p.add_argument(
        "--study", metavar="NAME", help="open this study directly (waits for it to appear)"
    )
    p.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="how often to poll the store (default 1)",
    )
    web = p.add_argument_group("in a browser (textual-serve)")
    web.add_argument(
        "--web",
        action="store_true",
        help="serve the TUI over HTTP instead of drawing it here; prints the URL",
    )
    web.add_argument(
        "--port", type=_port, default=8000, metavar="N", help="port to serve on (default 8000)"
    )
    web.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to bind (default 127.0.0.1: this machine only; reach it through an "
        "SSH tunnel, see docs/tui.md)",
    )


TUI = Command(
    "tui",
    "watch studies live in the terminal (read-only)",
    "platform tui --storage sqlite:///runs/quickstart.db --study quickstart\n"
    "platform tui --storage sqlite:///runs/quickstart.db --web --port 8000",
    _arguments,
    _run,
    description="Watch the studies of a results store live: trials, metrics, best params. "
    "Keys: Enter opens, / filters (states, params: depth=3 lr<0.01), s sorts, c swaps "
    "charts, ? help, d light/dark, q quits. --web serves the same view to a browser on "
    "127.0.0.1.",
)


@hookimpl
def register_commands(register: Register[Command]) -> None:
    """Register `platform tui [--storage URL] [--study NAME] [--interval SECONDS] [--web]`."""
    register(TUI)
