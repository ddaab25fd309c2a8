"""autoplat plugins, made from autoplat's plugin template (README.md lists them)."""

__version__ = "0.1.0"
