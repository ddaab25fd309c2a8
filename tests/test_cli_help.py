"""`platform COMMAND --help` explains each command with an example, uses the same
metavars everywhere, and `platform plugins` fits an 80-column terminal (issue 19 point 7)."""

from __future__ import annotations

import json
import re

import pytest

from autoplat import cli
from autoplat.core.registry import get_registry

# subcommands every install has: autoplat's own, and those its first-party plugins add
EXPECTED = {
    "search", "al", "curate", "runs", "show", "experts", "export", "predict", "delete", "copy",
    "export-optuna", "plugins", "tui", "metaclip-metadata", "av-superb",
}  # fmt: skip
METAVARS = {
    "--storage": "URL",
    "--out": "FILE",
    "--trial": "N",
    "--to": "URL",
    "--plugin": "PATH_OR_MODULE",
    "--top": "N",
}


def _commands() -> list[list[str]]:
    """Every registered command as argv (plugins' included), as `platform` lists them."""
    return [[name] for name in get_registry().names("commands")] + [["plugins", "new"]]


COMMANDS = _commands()


def _help(argv: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to it
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_subcommand_is_checked():
    assert {argv[0] for argv in COMMANDS} >= EXPECTED


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_has_a_description_and_an_example(argv, capsys, monkeypatch):
    text = _help(argv, capsys, monkeypatch)
    paragraphs = text.split("\n\n")
    description = paragraphs[1]  # after the usage: a summary line first
    assert description.strip(), text
    assert not description.startswith(("positional arguments:", "options:")), text
    lines = text.splitlines()
    assert "example:" in lines, text
    example = lines[lines.index("example:") + 1]
    assert example.startswith(f"  platform {' '.join(argv)} "), text
    too_long = [line for line in lines if len(line) > 80]
    assert not too_long, f"lines over 80 columns: {too_long}"


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_same_metavar_everywhere(argv, capsys, monkeypatch):
    usage = _help(argv, capsys, monkeypatch).split("\n\n")[0]
    for option, metavar in METAVARS.items():
        if re.search(rf"{option}\b(?!-)", usage):
            assert f"{option} {metavar}" in usage, f"want `{option} {metavar}` in:\n{usage}"


def test_plugins_action_is_optional(capsys, monkeypatch):
    text = _help(["plugins"], capsys, monkeypatch)
    assert "[new]" in text.split("\n\n")[0] and "ACTION" not in text


def test_plugins_table_fits_80_columns(capsys, monkeypatch):
    assert cli.main(["plugins", "--json"]) == 0
    plugins = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(cli.out, "_width", None)  # read COLUMNS now, not at import
    assert cli.main(["plugins"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "acquisitions: random," in text, text  # not `acquisi|tions`
    words = {w for p in plugins for names in p["registered"].values() for w in names}
    words |= {p["name"] for p in plugins}
    broken = sorted(w for w in words if w not in text)
    assert not broken, f"names broken across lines: {broken}\n{text}"
    tui = next(line for line in lines if line.startswith("│ tui "))
    assert "commands: tui" in tui
