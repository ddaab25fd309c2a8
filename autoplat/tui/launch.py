"""`platform search|al config.toml --tui`: run the study detached, watch it in the TUI."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_WAIT_S = 60.0  # how long a stopped study gets to record its trials after SIGINT


def detached_command(args: argparse.Namespace, command: str) -> list[str]:
    """The same `platform search` (or `al`) without --tui, as a module run of this
    interpreter."""
    cmd = [sys.executable, "-m", "autoplat.cli", command, str(args.config)]
    if args.storage:
        cmd += ["--storage", args.storage]
    if args.address:
        cmd += ["--address", args.address]
    if args.resume:
        cmd.append("--resume")
    for spec in getattr(args, "plugin", None) or []:
        cmd += ["--plugin", str(Path(spec).resolve()) if spec.endswith(".py") else spec]
    return cmd


def stop_search(process: subprocess.Popen, wait_s: float = STOP_WAIT_S) -> int:
    """SIGINT the search's process group (as Ctrl-C would), escalating if it hangs."""
    for sig, wait in ((signal.SIGINT, wait_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            return process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def run_with_tui(args: argparse.Namespace, command: str) -> int:
    """Validate the config, start `platform <command>` (search or al) detached, open the
    TUI on its study."""
    from autoplat.cli import load_registry
    from autoplat.core.al_study import load_al_config
    from autoplat.core.config import load_config
    from autoplat.core.store import DEFAULT_URL
    from autoplat.tui.app import PlatformApp, SearchProcess

    load = load_al_config if command == "al" else load_config
    cfg = load(args.config, load_registry(args)).config  # a bad config exits 2 here
    name = cfg.study.name
    url = args.storage or cfg.study.storage or DEFAULT_URL
    log = Path("runs") / f"{command}-{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    detached = detached_command(args, command)
    with log.open("ab") as out:
        process = subprocess.Popen(
            detached,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    study = SearchProcess(process, log, "experiments" if command == "al" else "search")
    resume = detached + ([] if args.resume else ["--resume"])
    what = f"`platform {command}`"
    choice = None
    try:
        choice = PlatformApp(url, study=name, search=study).run()
    finally:
        code = process.poll()
        if code is not None:
            print(f"{what} exited with code {code}; log: {log}")
        elif choice == "stop":
            print(f"stopping {what} (PID {process.pid}) ...", flush=True)
            code = stop_search(process)
            print(
                f"{what} stopped (exit code {code}); log: {log}. "
                f"Continue it with: platform {' '.join(resume[3:])}"
            )
        else:
            print(
                f"{what} keeps running in the background: PID {process.pid}, log {log}. "
                f"Watch it again with: platform tui --storage {url} --study {name}"
            )
    return 0 if code is None else code
