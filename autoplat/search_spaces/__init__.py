"""Named search spaces: every ``*.toml`` file in this folder, registered under its stem."""

from __future__ import annotations

from pathlib import Path

from autoplat.core.hookspecs import Register, hookimpl
from autoplat.core.space import NamedSpace

FOLDER = Path(__file__).parent


def _description(path: Path) -> str:
    """The text of the file's first comment line, or "" when it has none."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            return line.lstrip().lstrip("#").strip()
    return ""


@hookimpl
def register_search_spaces(register: Register) -> None:
    """Register each TOML file here as a ``NamedSpace``."""
    for path in sorted(FOLDER.glob("*.toml")):
        register(NamedSpace(name=path.stem, source=path, description=_description(path)))
