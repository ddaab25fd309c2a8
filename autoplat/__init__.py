"""autoplat: a plugin-based AutoML and active-learning platform (command: `platform`)."""

from autoplat.core.errors import AutoplatError
from autoplat.core.hookspecs import hookimpl

__all__ = ["AutoplatError", "hookimpl"]
__version__ = "0.1.0"
