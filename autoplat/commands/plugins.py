"""`platform plugins`: what is installed, what each plugin registered, its load errors;
`platform plugins new`: scaffold a plugin package."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from autoplat.cli import add_command, add_plugin_option, load_registry, out
from autoplat.core.hookspecs import Command


def _registers(plugin: Any) -> str:
    """What a plugin registered, one kind a line; then hooks that register no names
    (e.g. commands) and its load errors."""
    lines = [f"{kind}: {', '.join(names)}" for kind, names in plugin.registered.items()]
    other = [h.removeprefix("register_") for h in plugin.hooks]
    other = [h for h in other if h not in plugin.registered]
    if other:
        lines.append(f"hooks: {', '.join(other)}")
    return "\n".join(lines + [f"error: {e}" for e in plugin.errors])


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = sorted(load_registry(args, warn=False).plugins.values(), key=lambda p: p.name)
    if args.json:
        print(json.dumps([p.to_dict() for p in plugins], indent=2))
        return 0
    table = Table(title="plugins")
    table.add_column("plugin", no_wrap=True)
    table.add_column("package", max_width=16)  # "autoplat 0.1.0": one line
    table.add_column("status", no_wrap=True)
    table.add_column("registers", ratio=1)
    for p in plugins:
        package = " ".join(filter(None, [p.package, p.version]))
        table.add_row(p.name, package, p.status, _registers(p))
    out.print(table)
    return 0


def cmd_plugins_new(args: argparse.Namespace) -> int:
    from autoplat.core.scaffold import new_plugin

    path = new_plugin(args.name, Path(args.dir), args.kind)
    out.print(f"created {path}; next: pip install -e {path} && pytest {path}")
    return 0


def _new_arguments(p: argparse.ArgumentParser) -> None:
    from autoplat.core.scaffold import KINDS

    p.add_argument("name", help="package name, e.g. autoplat-mynet")
    p.add_argument(
        "--dir", default=".", metavar="DIR", help="parent folder of the new package (default: .)"
    )
    p.add_argument(
        "--kind",
        action="append",
        choices=KINDS,
        metavar="KIND",
        help=f"keep only this kind's example plugin ({', '.join(KINDS)}; repeat for more; "
        "architecture brings its search space). Default: all of them",
    )


NEW = Command(
    "new",
    "scaffold a plugin package from the template",
    "platform plugins new autoplat-mynet --dir ~/src\n"
    "platform plugins new autoplat-mymargin --kind acquisition",
    _new_arguments,
    cmd_plugins_new,
)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    add_plugin_option(p)
    actions = p.add_subparsers(dest="plugins_command", title="actions (optional)", metavar="[new]")
    add_command(actions, NEW)


COMMANDS = (
    Command(
        "plugins",
        "list plugins, what they register, and load errors",
        "platform plugins --plugin ./my_scorer.py\nplatform plugins new autoplat-mynet --dir ~/src",
        _arguments,
        cmd_plugins,
    ),
)
