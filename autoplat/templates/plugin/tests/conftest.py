"""Test setup: installed plugins never autoload; each test registers this one explicitly."""

from __future__ import annotations

import os

import pytest
from autoplat.testing import registered_plugin

from autoplat_example import plugin

os.environ["AUTOPLAT_BUILTIN_ONLY"] = "1"  # before anything loads the registry


@pytest.fixture(autouse=True)
def example_plugin():
    """This package's plugin in the process registry for the length of each test."""
    with registered_plugin(plugin, "example") as info:
        yield info
