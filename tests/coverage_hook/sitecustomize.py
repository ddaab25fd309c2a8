"""Imported at the start of every Python process of `make test` (the Makefile puts this
folder on PYTHONPATH): where coverage measures the process (its .pth started it, see
[tool.coverage.run] in pyproject.toml), save the data every few seconds as well as at
exit, because Ray ends its workers with SIGKILL, which no exit handler survives.

Coverage's data file is not safe to write from two threads at once: a periodic save
racing the exit save (its atexit handler or its os._exit patch) crashed the process with
SIGSEGV inside sqlite about once per suite run. So every save of the process, coverage's
own included, goes through one lock."""

from __future__ import annotations

import contextlib
import threading
import time

SAVE_EVERY_S = 2.0


def _save_every(save, seconds: float) -> None:
    while True:
        time.sleep(seconds)
        with contextlib.suppress(Exception):  # a lost snapshot is made up by the next one
            save()


def _start() -> None:
    try:
        import coverage
    except ImportError:
        return
    current = coverage.Coverage.current()
    if current is None:
        return
    lock = threading.Lock()
    unlocked_save = current.save

    def save() -> None:
        with lock:
            unlocked_save()

    current.save = save  # what coverage's exit handlers call, on this instance
    threading.Thread(target=_save_every, args=(save, SAVE_EVERY_S), daemon=True).start()


_start()
