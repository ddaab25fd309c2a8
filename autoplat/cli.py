"""The `platform` command: builds its parser from the commands plugins register (autoplat's
own included, see autoplat/commands/), runs the chosen one, and turns errors into one
line and an exit code. Stays light: heavy libraries load inside the command that needs
them."""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from autoplat import __version__
from autoplat.core.defaults import DEFAULT_URL
from autoplat.core.errors import AutoplatError, StoreFault

if TYPE_CHECKING:
    from autoplat.core.hookspecs import Command
    from autoplat.core.registry import Registry

COMMAND_ERROR = "command "  # how a plugin error about one of its commands starts
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def storage(args: argparse.Namespace, default: str | None = None) -> str:
    """The store URL: --storage, else ``default`` (a config's), else the default store."""
    return args.storage or default or DEFAULT_URL


def add_storage_option(p: argparse.ArgumentParser, extra: str = "") -> None:
    """``--storage URL``, the same in every command."""
    p.add_argument(
        "--storage",
        metavar="URL",
        help=f"SQLAlchemy URL of the results store (default {DEFAULT_URL}){extra}",
    )


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    """``--plugin PATH_OR_MODULE``, repeatable: local plugin modules to load."""
    p.add_argument(
        "--plugin",
        action="append",
        metavar="PATH_OR_MODULE",
        help="load a local plugin module (a .py file, or a module name); repeatable",
    )


def load_registry(args: argparse.Namespace, warn: bool = True) -> Registry:
    """The plugin registry with the ``--plugin`` modules and the config's ``[plugins]``
    modules loaded (one that is not there: exit 2); with ``warn``, plugins that failed are
    warned about."""
    from autoplat.core.errors import PluginError
    from autoplat.core.registry import get_registry

    registry = get_registry()
    try:
        for spec in getattr(args, "plugin", None) or []:
            try:
                registry.load_module(spec)
            except PluginError as exc:
                raise PluginError(f"--plugin {spec}: {exc}") from None
        if getattr(args, "config", None):
            from autoplat.core.config import load_plugins, read_config

            load_plugins(*read_config(Path(args.config)), registry)
    finally:  # also before an error in the config: a broken plugin may be its cause
        if warn:
            warn_plugin_errors(registry)
    return registry


def warn_plugin_errors(registry: Registry, commands: bool = False) -> None:
    """One warning line per problem a plugin had while loading; with ``commands``, only
    the commands left out of the parser (``main`` warns of those before parsing)."""
    for plugin, message in registry.errors():
        if message.startswith(COMMAND_ERROR) != commands:
            continue
        package = f" (package {plugin.package} {plugin.version})" if plugin.package else ""
        err.print(
            f"warning: plugin '{plugin.name}'{package} skipped part of its load: {message}; "
            "see `platform plugins`",
            markup=False,
        )


class HelpFormatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog to the terminal on its own, and keeps
    indented lines (example commands) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line
            if line.startswith(" ") or not line
            else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
            for line in text.splitlines()
        )


def add_command(sub: Any, command: Command) -> argparse.ArgumentParser:
    """Add ``command`` to an argparse subparsers object: its ``--help`` starts with the
    description and ends with ``example:`` and the example command lines."""
    lines = "\n".join(f"  {line}" for line in command.example.splitlines())
    p = sub.add_parser(
        command.name,
        help=command.help,
        description=command.description or command.help[0].upper() + command.help[1:] + ".",
        epilog=f"example:\n{lines}",
        formatter_class=HelpFormatter,
    )
    command.arguments(p)
    p.set_defaults(func=command.run)
    return p


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    """`platform` with every registered command, in registration order (autoplat's own
    first). A command whose options raise is left out and recorded on its plugin."""
    parser = argparse.ArgumentParser(
        prog="platform",
        description="AutoML and active learning: search, watch, export.",
        epilog="`platform COMMAND --help` describes a command and gives an example.",
    )
    parser.add_argument("--version", action="version", version=f"autoplat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in registry.items["commands"]:
        command = registry.get("commands", name)
        try:
            command.arguments(argparse.ArgumentParser(add_help=False))  # a dry run
        except Exception as exc:  # noqa: BLE001 - the plugin's bug: drop its command
            owner = registry.plugins[registry.owners[("commands", name)]]
            owner.errors.append(f"{COMMAND_ERROR}'{name}' left out: {type(exc).__name__}: {exc}")
            continue
        add_command(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from autoplat.core.registry import get_registry

    registry = get_registry()
    parser = build_parser(registry)
    warn_plugin_errors(registry, commands=True)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except StoreFault as exc:  # the store failed mid-run: not bad input
        err.print(f"error: {exc}", markup=False)
        return 1
    except AutoplatError as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    except BrokenPipeError:  # e.g. `platform show STUDY --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run() -> None:
    """The console script: ``main``, then exit. After a command that loaded torch or Ray,
    the exit handlers run (Ray's shutdown, logging, temporary files, coverage) but the
    interpreter's teardown of those libraries' objects is skipped: it took 1-3 s."""
    code = main()
    if "torch" in sys.modules or "ray" in sys.modules:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
