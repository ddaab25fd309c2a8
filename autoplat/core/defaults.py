"""Defaults that light modules (the CLI's option help, plugin commands) share with the
store without importing it."""

DEFAULT_URL = "sqlite:///runs/platform.db"  # the results store when none is given
