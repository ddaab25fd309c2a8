"""autoplat: a plugin-based AutoML and active-learning platform (command: `platform`).

The Python API (``docs/python.md``): ``search``, ``run_al``, ``curate``, ``load_study``,
``list_studies``, ``copy_study`` and ``delete_study``, imported on first use so ``import
autoplat`` stays light.
"""

from typing import Any

from autoplat.core.errors import (
    AutoplatError,
    ConfigError,
    DataError,
    PluginError,
    StoreError,
    StoreFault,
)
from autoplat.core.hookspecs import hookimpl

_API = (
    "search",
    "run_al",
    "curate",
    "load_study",
    "list_studies",
    "copy_study",
    "delete_study",
)
__all__ = [
    "AutoplatError",
    "ConfigError",
    "DataError",
    "PluginError",
    "StoreError",
    "StoreFault",
    "StudyView",
    "hookimpl",
    *_API,
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _API:
        from autoplat import api

        return getattr(api, name)
    if name == "StudyView":
        from autoplat.core.results import StudyView

        return StudyView
    raise AttributeError(f"module 'autoplat' has no attribute '{name}'")
