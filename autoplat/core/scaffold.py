"""``platform plugins new NAME``: a new plugin package from the template in autoplat/templates.

The template is the package in examples/plugin-template (kept identical, which a test
checks). Its names are renamed: the distribution ``autoplat-example`` and the import
package ``autoplat_example`` become NAME, and the plugin name ``example`` (the entry
point, and the ``example-`` prefix of everything it registers) becomes NAME without a
leading ``autoplat-``.

``kinds`` keeps only some kinds' examples: the template marks what belongs to a kind with
a ``# kind: K`` (or ``<!-- kind: K -->``) comment, kept when every kind it names is
chosen. At the end of a line it marks that line; on a line of its own, the block below
it, up to the next unindented line after a blank line (a function, class or paragraph).
Whole files belong to kinds by ``FILES``. Generated files carry no markers.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from autoplat.core.errors import AutoplatError

TEMPLATE = Path(__file__).parents[1] / "templates" / "plugin"
SKIP = {"__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
KINDS = ("architecture", "dataset", "strategy", "acquisition", "scorer")
"""The kinds the template has an example of (an architecture brings its search space)."""
FILES = {  # template files that belong to kinds (kept when all of them are chosen)
    "example.toml": ("architecture", "dataset", "strategy"),
    "src/autoplat_example/mlp.py": ("architecture",),
    "src/autoplat_example/space.toml": ("architecture",),
    "src/autoplat_example/shapes.py": ("dataset",),
    "src/autoplat_example/hill_climb.py": ("strategy",),
    "src/autoplat_example/margin.py": ("acquisition",),
    "src/autoplat_example/word_count.py": ("scorer",),
}
MARKER = re.compile(
    r"^(?P<code>.*?)[ \t]*(?:#|<!--)[ \t]*kind: (?P<kinds>[a-z, ]+?)[ \t]*(?:-->)?$"
)


def _check_name(name: str) -> tuple[str, str, str]:
    """The distribution, import and plugin names for NAME, or an AutoplatError."""
    if not NAME_RE.fullmatch(name):
        raise AutoplatError(
            f"bad plugin package name '{name}': use lowercase letters, digits and single "
            "'-' or '_' between them, starting with a letter (e.g. autoplat-mynet)"
        )
    dist, package = name.replace("_", "-"), name.replace("-", "_")
    short = dist.removeprefix("autoplat-")
    if package == "autoplat" or keyword.iskeyword(package) or not short:
        raise AutoplatError(f"bad plugin package name '{name}': pick another (e.g. autoplat-mynet)")
    if importlib.util.find_spec(package) is not None:
        raise AutoplatError(
            f"bad plugin package name '{name}': a module named '{package}' is already "
            "importable here and would clash; pick another name"
        )
    return dist, package, short


def _renamer(dist: str, package: str, short: str):
    rules = [
        (re.compile(r"autoplat-example"), dist),
        (re.compile(r"autoplat_example"), package),
        (re.compile(r"(?<![\w-])example(?=-[a-z])"), short),  # example-mlp, ...
        (re.compile(r'"example"'), f'"{short}"'),  # the plugin's name in tests, configs
        (re.compile(r"^example = ", re.M), f"{short} = "),  # the entry point
    ]

    def rename(text: str) -> str:
        for pattern, replacement in rules:
            text = pattern.sub(replacement, text)
        return text

    return rename


def _skipped(path: Path) -> bool:
    return any(part in SKIP or part.endswith(".egg-info") for part in path.parts) or (
        path.suffix == ".pyc"
    )


def _block_end(lines: list[str], start: int) -> int:
    """The index after the block starting at ``start``: it ends before the first
    unindented line that follows a blank line."""
    blank = False
    for i in range(start, len(lines)):
        if not lines[i].strip():
            blank = True
        elif blank and not lines[i][0].isspace():
            return i
    return len(lines)


def select_kinds(text: str, kinds: set[str]) -> str:
    """``text`` with the lines and blocks marked for other kinds left out, and without
    the markers."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    i = 0
    while i < len(lines):
        match = MARKER.match(lines[i].rstrip("\n"))
        if match is None:
            kept.append(lines[i])
            i += 1
            continue
        wanted = set(match["kinds"].replace(",", " ").split()) <= kinds
        if match["code"].strip():  # marks its own line
            kept += [match["code"] + "\n"] if wanted else []
            i += 1
            if not wanted and kept and not kept[-1].strip() and i < len(lines):
                i += not lines[i].strip()  # a line alone between blank lines: one blank stays
            continue
        end = _block_end(lines, i + 1)
        kept += lines[i + 1 : end] if wanted else []
        i = end
    return "".join(kept).rstrip("\n") + "\n"


def _check_kinds(kinds: Sequence[str] | None) -> set[str]:
    chosen = set(kinds or KINDS)
    unknown = sorted(chosen - set(KINDS))
    if unknown:
        raise AutoplatError(
            f"unknown plugin kind '{unknown[0]}' for the template; use one of {', '.join(KINDS)}"
        )
    return chosen


def new_plugin(name: str, parent: Path, kinds: Sequence[str] | None = None) -> Path:
    """Write a plugin package named ``name`` into ``parent / name``; return its path.
    ``kinds`` (default: all of ``KINDS``) are the kinds whose examples it keeps.

    Raises:
        AutoplatError: ``name`` is not a usable package name, a kind is unknown, or the
            target exists.
    """
    dist, package, short = _check_name(name)
    chosen = _check_kinds(kinds)
    target = Path(parent) / dist
    if target.exists():
        raise AutoplatError(f"'{target}' already exists; remove it or pass another --dir")
    if not TEMPLATE.is_dir():
        raise AutoplatError(f"the plugin template is missing at '{TEMPLATE}'; reinstall autoplat")
    rename = _renamer(dist, package, short)
    files = sorted(
        p
        for p in TEMPLATE.rglob("*")
        if p.is_file()
        and not _skipped(p.relative_to(TEMPLATE))
        and set(FILES.get(p.relative_to(TEMPLATE).as_posix(), ())) <= chosen
    )
    for source in files:
        dest = target / rename(str(source.relative_to(TEMPLATE)))
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = select_kinds(source.read_text(encoding="utf-8"), chosen)
        dest.write_text(rename(text), encoding="utf-8")
        shutil.copymode(source, dest)
    return target
