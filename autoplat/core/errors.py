"""Errors a user can cause. The CLI prints them without a traceback and exits 2."""


class AutoplatError(Exception):
    """A problem the user can fix: the message says what, where and how."""


class ConfigError(AutoplatError):
    """A config file is invalid."""


class PluginError(AutoplatError):
    """A plugin is missing, broken or clashes with another."""


class StoreError(AutoplatError):
    """The results store cannot be opened or does not hold what was asked for."""


class DataError(AutoplatError):
    """Data a user supplied cannot be read or used (a file, a folder, labels)."""


class StoreFault(StoreError):
    """The store failed mid-run (locked past its timeout, disk full, server gone, corrupt
    file). Not the user's input: the CLI exits 1; the study can be continued with --resume."""
