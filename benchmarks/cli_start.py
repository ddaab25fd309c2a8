"""How long `platform` takes to start, against `optuna --help` on the same machine.

Each row is a fresh process, run ``--repeats`` times interleaved; the table shows the
best (lowest) wall time, since a busy machine only ever adds time. Rows:

- ``python -c pass``: the interpreter alone, the floor.
- ``optuna --help``: the reference (Optuna's CLI; the issue's target is 1.2x of it).
- ``platform --help``, ``platform runs``, ``platform show STUDY``: on a real SQLite store
  holding one finished study of 20 trials, made here first.
- ``import torch``: what every command paid before plugins registered lazily.

Usage::

    python benchmarks/cli_start.py              # 7 repeats, about 30 s
    python benchmarks/cli_start.py --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.2  # platform's commands within 1.2x of `optuna --help`


def make_store(folder: Path) -> str:
    """A SQLite store with one complete 20-trial study; its URL."""
    from autoplat.core.store import Store, StudyState, TrialState

    url = f"sqlite:///{folder}/start.db"
    store = Store(url)
    study = store.create_study(
        "bench", kind="search", metric="val_accuracy", direction="maximize", config="{}"
    )
    for number in range(20):
        trial = store.start_trial(study.id, {"lr": 0.01 * (number + 1)})
        store.add_metrics(trial.id, 1, {"val_accuracy": 0.5 + number / 100})
        store.finish_trial(trial.id, TrialState.COMPLETE, 0.5 + number / 100)
    store.set_study_state(study.id, StudyState.FINISHED)
    return url


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    optuna = shutil.which("optuna", path=str(bin_dir)) or shutil.which("optuna")
    platform = [sys.executable, "-m", "autoplat.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        url = make_store(Path(tmp))
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "optuna --help": [optuna, "--help"],
            "platform --help": [*platform, "--help"],
            "platform runs": [*platform, "runs", "--storage", url],
            "platform show bench": [*platform, "show", "bench", "--storage", url],
            "import torch": [sys.executable, "-c", "import torch"],
        }
        best = {name: float("inf") for name in rows}
        for _ in range(args.repeats):
            for name, command in rows.items():
                best[name] = min(best[name], wall(command))
    reference = best["optuna --help"]
    print(f"{'command':<22}{'best of ' + str(args.repeats):>12}{'x optuna --help':>17}")
    for name, seconds in best.items():
        print(f"{name:<22}{seconds:>11.3f}s{seconds / reference:>16.2f}x")
    commands = [name for name in best if name.startswith("platform")]
    worst = max(best[name] / reference for name in commands)
    verdict = "meets" if worst <= TARGET else "misses"
    print(f"slowest platform command: {worst:.2f}x optuna --help ({verdict} the {TARGET}x target)")


if __name__ == "__main__":
    main()
