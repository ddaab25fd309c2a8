"""``platform plugins new NAME``: a new plugin package from the template in autoplat/templates.

The template is the package in examples/plugin-template (kept identical, which a test
checks). Its names are renamed: the distribution ``autoplat-example`` and the import
package ``autoplat_example`` become NAME, and the plugin name ``example`` (the entry
point, and the ``example-`` prefix of everything it registers) becomes NAME without a
leading ``autoplat-``.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
from pathlib import Path

from autoplat.core.errors import AutoplatError

TEMPLATE = Path(__file__).parents[1] / "templates" / "plugin"
SKIP = {"__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")


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


def new_plugin(name: str, parent: Path) -> Path:
    """Write a plugin package named ``name`` into ``parent / name``; return its path.

    Raises:
        AutoplatError: ``name`` is not a usable package name, or the target exists.
    """
    dist, package, short = _check_name(name)
    target = Path(parent) / dist
    if target.exists():
        raise AutoplatError(f"'{target}' already exists; remove it or pass another --dir")
    if not TEMPLATE.is_dir():
        raise AutoplatError(f"the plugin template is missing at '{TEMPLATE}'; reinstall autoplat")
    rename = _renamer(dist, package, short)
    files = sorted(
        p for p in TEMPLATE.rglob("*") if p.is_file() and not _skipped(p.relative_to(TEMPLATE))
    )
    for source in files:
        dest = target / rename(str(source.relative_to(TEMPLATE)))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(rename(source.read_text(encoding="utf-8")), encoding="utf-8")
        shutil.copymode(source, dest)
    return target
