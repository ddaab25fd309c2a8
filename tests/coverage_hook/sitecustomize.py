"""Imported at the start of every Python process of `make test` (the Makefile puts this
folder on PYTHONPATH): where coverage measures the process (its .pth started it, see
[tool.coverage.run] in pyproject.toml), save the data every few seconds as well as at
exit, because Ray ends its workers with SIGKILL, which no exit handler survives."""

from __future__ import annotations

import contextlib
import threading
import time

SAVE_EVERY_S = 2.0


def _save_every(coverage, seconds: float) -> None:
    while True:
        time.sleep(seconds)
        with contextlib.suppress(Exception):  # a lost snapshot is made up by the next one
            coverage.save()


def _start() -> None:
    try:
        import coverage
    except ImportError:
        return
    current = coverage.Coverage.current()
    if current is not None:
        threading.Thread(target=_save_every, args=(current, SAVE_EVERY_S), daemon=True).start()


_start()
