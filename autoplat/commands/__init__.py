"""autoplat's own commands, registered through `register_commands` like any plugin's
(entry point ``commands``): each module's ``COMMANDS``, in the order `platform --help`
lists them."""

from autoplat.commands import models, plugins, results, workflows
from autoplat.core.hookspecs import Command, Register, hookimpl


@hookimpl
def register_commands(register: Register[Command]) -> None:
    """Register search, al, curate, runs, show, delete, copy, export-optuna, export,
    predict and plugins."""
    for module in (workflows, results, models, plugins):
        for command in module.COMMANDS:
            register(command)
