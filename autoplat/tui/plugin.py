"""Registers `platform tui` through the same hook third-party commands use."""

from __future__ import annotations

from autoplat.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli) -> None:
    """Add `platform tui` (implemented by the TUI helper)."""
