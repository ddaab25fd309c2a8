"""The workflow commands: `search`, `al` and `curate`. Each validates its config (exit 2
before any work), runs on the core workflow with a progress bar, and ends with the
results table and the command that shows them again. SIGTERM stops them as Ctrl-C does;
a stopped run prints how to resume it."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from autoplat.cli import add_plugin_option, add_storage_option, err, load_registry, out, storage
from autoplat.commands.results import (
    al_json,
    print_al_study,
    print_curate_study,
    print_study,
    stored_line,
)
from autoplat.core.errors import StoreFault
from autoplat.core.hookspecs import Command


def _progress():
    """The progress bar of a study on stderr: done/total, elapsed time, a status line."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
    )


SIGINT_EXIT, SIGTERM_EXIT = 130, 143  # 128 + the signal, as a shell reports it


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """SIGTERM (kill, systemd, Slurm, Kubernetes) stops a command as Ctrl-C does: it calls
    the SIGINT handler (Ray Tune's graceful stop, else KeyboardInterrupt). Yields a list
    that holds SIGTERM once one came."""
    received: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _own_ray(keep_files: bool) -> Iterator[None]:
    """Shut down the Ray a command started (not one it found running), and remove a local
    Ray's temp session folder unless ``keep_files``."""
    import ray

    from autoplat.core.runner import shutdown_ray

    started = not ray.is_initialized()
    try:
        yield
    finally:
        if started and ray.is_initialized():
            shutdown_ray(keep_files)


def _drive(
    command: str,
    args: argparse.Namespace,
    progress: Any,
    keep_ray_files: bool,
    run: Callable[[], Any],
) -> tuple[list[int], int | None]:
    """Run a study's driver as search and al do: SIGTERM stops it as Ctrl-C does (Tune
    stops on the first one by itself; a second one lands here), the Ray it started is shut
    down, and a store fault is one line and exit 1. Returns the SIGTERMs received and an
    exit code when the command must stop there."""
    sigterm: list[int] = []
    try:
        with (
            _sigterm_as_ctrl_c() as sigterm,
            contextlib.suppress(KeyboardInterrupt),
            _own_ray(keep_ray_files),
        ):
            run()
    except StoreFault as exc:
        progress.stop()
        return sigterm, _store_fault(command, args, exc)
    return sigterm, None


def _interrupted(kept: str, command: str, args: argparse.Namespace, sigterm: list[int]) -> int:
    """A stopped study: what is kept, the resume command; exit 130 (Ctrl-C) or 143."""
    err.print(f"interrupted: finished {kept}. Continue with: " + _resume_command(command, args))
    return SIGTERM_EXIT if sigterm else SIGINT_EXIT


def _stopped_before_start(sigterm: list[int]) -> int:
    """Stopped while Ray started, before the study was stored."""
    err.print("interrupted before the study started: nothing was stored")
    return SIGTERM_EXIT if sigterm else SIGINT_EXIT


def _resume_command(command: str, args: argparse.Namespace) -> str:
    storage = f" --storage {args.storage}" if args.storage else ""
    return f"platform {command} {args.config} --resume{storage}"


def _store_fault(command: str, args: argparse.Namespace, exc: StoreFault) -> int:
    """The store failed mid-run: one line and how to continue; exit 1."""
    err.print(f"error: {exc}", markup=False)
    err.print(f"Continue with: {_resume_command(command, args)}", markup=False)
    return 1


def _ray_study(
    command: str,
    args: argparse.Namespace,
    load: Callable[..., Any],
    run: Callable[..., Any],
    total: Callable[[Any], int | None],
    events: Callable[[Any, Any, Any], Callable[[str, dict[str, Any]], None]],
) -> tuple[Any, Any, Any, list[int]] | int:
    """What search and al share: ``--tui`` hands over to the TUI; else load and check the
    config (exit 2 before any work), run the study on Ray under a progress bar of
    ``total(resolved)`` steps fed by ``events(resolved, progress, task)``, SIGTERM as
    Ctrl-C. Returns (resolved, store, study, SIGTERMs received), or the exit code when the
    store failed or the run stopped before the study was stored."""
    from autoplat.core.store import Store

    if args.tui:
        from autoplat.tui.launch import run_with_tui

        return run_with_tui(args, command)
    resolved = load(args.config, load_registry(args))
    cfg = resolved.config
    store = Store(storage(args, cfg.study.storage))
    with _progress() as progress:
        task = progress.add_task(cfg.study.name, total=total(resolved), status="starting Ray")
        on_event = events(resolved, progress, task)
        sigterm, code = _drive(
            command,
            args,
            progress,
            cfg.study.keep_ray_files,
            lambda: run(
                resolved, store, address=args.address, resume=args.resume, on_event=on_event
            ),
        )
    if code is not None:
        return code
    study = store.find_study(cfg.study.name)
    if study is None:
        return _stopped_before_start(sigterm)
    return resolved, store, study, sigterm


def _retry_line(who: str, data: dict[str, Any], max_failures: int) -> str:
    return f"{who}: its worker died ({data['error']}); retry {data['retries']} of {max_failures}"


def _search_events(resolved: Any, progress: Any, task: Any) -> Callable[..., None]:
    """The progress of a search: each trial's start, epochs, end, and the best so far."""
    metric = resolved.config.study.metric
    sign = 1 if resolved.direction == "maximize" else -1
    best: list[float] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        trial = f"trial {data['number']}"
        if kind == "start":
            progress.update(task, status=f"{trial} started")
        elif kind == "result":
            value = data["metrics"].get(metric)
            if value is not None:
                progress.update(task, status=f"{trial} epoch {data['step']} {metric}={value:.4f}")
        elif kind == "retry":
            line = _retry_line(trial, data, resolved.config.resources.max_failures)
            progress.console.print(line, markup=False)
        elif kind == "end":
            progress.advance(task)
            value = data.get("value")
            if data["state"] == "complete" and value is not None:
                if not best or sign * value > sign * best[0]:
                    best[:] = [value]
                line = f"{trial} complete: {metric}={value:.4f}"
            else:
                line = f"{trial} {data['state']}"
                if data.get("error"):
                    line += f": {data['error']}"
            progress.console.print(line, markup=False)
            if best:
                progress.update(task, status=f"best {metric}={best[0]:.4f}")

    return on_event


def _search_trials(resolved: Any) -> int | None:
    """A bar of ``trials`` steps; a one-shot search's count is known only once it derived."""
    from autoplat.core.interfaces import OneShotStrategy

    one_shot = issubclass(resolved.strategy_cls, OneShotStrategy)
    return None if one_shot else resolved.config.study.trials


def cmd_search(args: argparse.Namespace) -> int:
    from autoplat.core.config import load_config
    from autoplat.core.runner import exit_code
    from autoplat.core.store import StudyState, TrialState
    from autoplat.core.study import run_study

    started = _ray_study("search", args, load_config, run_study, _search_trials, _search_events)
    if isinstance(started, int):
        return started
    _, store, study, sigterm = started
    if args.json:
        print(json.dumps(store.summary(study), indent=2))
    else:
        print_study(store, study, top=10)
        out.print(stored_line(store, study))
    if study.state == StudyState.INTERRUPTED or sigterm:
        return _interrupted("trials are stored", "search", args, sigterm)
    trials = store.trials(study.id)
    failed = [t.attrs_dict for t in trials if t.state == TrialState.FAIL]
    if failed and not any(t.state == TrialState.COMPLETE for t in trials):
        err.print(
            f"no trial completed ({len(failed)} failed, above); fix the cause, then run a new "
            "study or continue with --resume",
            markup=False,
        )
        return exit_code(failed)  # 2: bad data or config, the user's to fix; else 1
    return 0


def cmd_al(args: argparse.Namespace) -> int:
    from autoplat.core.al_study import learning_curves, load_al_config, run_al
    from autoplat.core.runner import exit_code
    from autoplat.core.store import StudyState

    failures: list[dict[str, Any]] = []  # the "end" events of experiments that failed now

    def experiments(resolved: Any) -> int:
        return len(resolved.acquisitions) * len(resolved.config.study.seed_list())

    def events(resolved: Any, progress: Any, task: Any) -> Callable[..., None]:
        cfg = resolved.config
        if cfg.oracle.name == "file":
            folder = Path(cfg.oracle.path) / cfg.study.name
            err.print(
                f"file oracle: queries appear in {folder}/ as *.query.{cfg.oracle.format}; "
                f"write the labeled copy as *.labels.{cfg.oracle.format} next to each"
            )

        def on_event(kind: str, data: dict[str, Any]) -> None:
            who = f"{data['acquisition']} seed {data['seed']}"
            if kind == "retry":
                line = _retry_line(who, data, cfg.resources.max_failures)
                progress.console.print(line, markup=False)
            elif kind == "round":
                accuracy = data.get("test_accuracy", float("nan"))
                progress.update(
                    task, status=f"{who}: {data['n_labeled']} labels, test acc {accuracy:.3f}"
                )
            elif kind == "end":
                progress.advance(task)
                if data.get("error"):
                    failures.append(data)
                line = f"{who} {data['state']}"
                progress.console.print(
                    line + (f": {data['error']}" if data.get("error") else ""), markup=False
                )

        return on_event

    started = _ray_study("al", args, load_al_config, run_al, experiments, events)
    if isinstance(started, int):
        return started
    _, store, study, sigterm = started
    curves = learning_curves(store.al_rounds(study.id))
    if args.json:
        print(json.dumps(al_json(store, study, curves), indent=2))
    else:
        print_al_study(store, study, curves)
        out.print(stored_line(store, study))
    if study.state == StudyState.INTERRUPTED or sigterm:
        return _interrupted("rounds are stored", "al", args, sigterm)
    if failures:
        err.print(
            f"{len(failures)} experiments failed (above); fix the cause and continue with: "
            + _resume_command("al", args)
        )
        return exit_code(failures)  # 2: bad labels, data or config, the user's to fix; else 1
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from autoplat.core.curation import load_curate_config, run_curation
    from autoplat.core.store import Store

    registry = load_registry(args)
    resolved = load_curate_config(args.config, registry)
    store = Store(storage(args, resolved.config.study.storage))
    names = ", ".join(cls.name for cls, _ in resolved.scorers)
    progress = _progress()  # shown from the first chunk on, so setup errors print alone
    task = progress.add_task(resolved.config.study.name, total=None, status="")

    def on_progress(phase: str, done: int, total: int) -> None:
        progress.start()
        status = {"fit": "first pass (counts, fits)", "score": f"scoring: {names}"}[phase]
        progress.update(task, completed=done, total=total, status=status)

    try:
        with _sigterm_as_ctrl_c() as sigterm:
            run_curation(resolved, store, resume=args.resume, progress=on_progress)
    except KeyboardInterrupt:
        progress.stop()
        return _interrupted("chunks are kept", "curate", args, sigterm)
    finally:
        progress.stop()
    study = store.get_study(resolved.config.study.name)
    if args.json:
        from autoplat.core.results import curation_info

        print(json.dumps(curation_info(store, study), indent=2))
        return 0
    print_curate_study(store, study)
    out.print(stored_line(store, study))
    return 0


def _workflow_arguments(what: str, ray: bool, tui: str | None) -> Callable[[Any], None]:
    """The options search, al and curate share: CONFIG, --storage, [--address],
    --resume, [--tui], --plugin, --json."""

    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help=f"path to {what} config TOML file")
        add_storage_option(p, "; overrides [study].storage")
        if ray:
            p.add_argument(
                "--address",
                metavar="HOST:PORT",
                help="join the Ray cluster at this address (or RAY_ADDRESS)",
            )
        run = "study" if ray else "run"
        p.add_argument("--resume", action="store_true", help=f"continue an interrupted {run}")
        if tui:
            p.add_argument("--tui", action="store_true", help=f"watch the {tui} live in the TUI")
        add_plugin_option(p)
        p.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    return arguments


COMMANDS = (
    Command(
        "search",
        "run an architecture/hyperparameter search",
        "platform search examples/quickstart.toml --tui\n"
        "platform search examples/quickstart.toml --resume",
        _workflow_arguments("a", ray=True, tui="search"),
        cmd_search,
    ),
    Command(
        "al",
        "run active-learning experiments (acquisitions x seeds)",
        "platform al examples/al_digits.toml --storage sqlite:///runs/al.db --tui",
        _workflow_arguments("an active-learning", ray=True, tui="experiments"),
        cmd_al,
    ),
    Command(
        "curate",
        "score and filter record files with data-quality scorers",
        "platform curate examples/curate_alt_texts.toml --storage sqlite:///runs/c.db",
        _workflow_arguments("a curation", ray=False, tui=None),
        cmd_curate,
    ),
)
