"""The workflow commands: `search`, `al` and `curate`. Each validates its config (exit 2
before any work), runs on the core workflow with a progress bar, and ends with the
results table and the command that shows them again. SIGTERM stops them as Ctrl-C does;
a stopped run prints how to resume it."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import time
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
    """The progress bar of a study on stderr: done/total, elapsed time, the time left
    (``Eta``), the best so far and a status line."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    def text(field: str, ratio: int) -> TextColumn:  # takes what is left, cut with "…"
        column = Column(ratio=ratio, no_wrap=True, overflow="ellipsis")
        return TextColumn(f"{{task.fields[{field}]}}", markup=False, table_column=column)

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        _eta_column(),
        text("best", 1),
        text("status", 3),
        console=err,
        expand=True,
    )


def _eta_column():
    """A column "ETA h:mm:ss" from the task's ``eta`` field (``Eta`` or ``PassEta``);
    "ETA -" until there is something to estimate from."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        max_refresh = 0.5

        def render(self, task: Any) -> Text:
            eta = task.fields.get("eta")
            seconds = 0.0 if task.finished else eta.seconds(task) if eta else None
            if seconds is None:
                return Text("ETA -", style="progress.remaining")
            minutes, secs = divmod(round(seconds), 60)
            hours, minutes = divmod(minutes, 60)
            return Text(f"ETA {hours}:{minutes:02d}:{secs:02d}", style="progress.remaining")

    return EtaColumn()


class Eta:
    """The time left of trials that run concurrently: the median duration of the trials
    finished in this run (before the first: the running ones' elapsed time over the share
    they did) for each trial left, spread over as many as were seen running at once.
    Rich's own estimate (steps per second over the last 30 s) swings wildly when several
    trials end at once and long ones start together; this one does not. The median is
    not thrown off by a worker's first trial, which also waited for the worker to start."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started: dict[Any, float] = {}  # running trial -> its start
        self.share: dict[Any, float] = {}  # running trial -> the share of it done
        self.durations: list[float] = []
        self.peak = 1  # the most trials seen running at once

    def start(self, key: Any) -> None:
        self.started[key] = self.clock()
        self.peak = max(self.peak, len(self.started))

    def progress(self, key: Any, share: float) -> None:
        if key in self.started:
            self.share[key] = share

    def end(self, key: Any) -> None:
        start = self.started.pop(key, None)
        self.share.pop(key, None)
        if start is not None:
            self.durations.append(self.clock() - start)

    def seconds(self, task: Any) -> float | None:
        """Seconds until the task's remaining trials end; None before anything is known."""
        if task.remaining is None:
            return None
        now = self.clock()
        elapsed = {key: now - start for key, start in self.started.items()}
        guesses = self.durations or [
            elapsed[key] / share for key, share in self.share.items() if share > 0
        ]
        if not guesses:
            return None
        typical = statistics.median(guesses)
        running = [max(typical - e, 0.0) for e in elapsed.values()]
        queued = max(0.0, task.remaining - len(running))
        work = sum(running) + queued * typical
        return max(work / max(self.peak, 1), max(running, default=0.0))


class PassEta:
    """The time left of a pass over records (curate) that starts now at record ``first``
    (a resumed pass starts past 0): its rate so far times what is left."""

    def __init__(self, first: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.first, self.start = clock, first, clock()

    def seconds(self, task: Any) -> float | None:
        done = task.completed - self.first
        if task.remaining is None or done <= 0:
            return None
        return (self.clock() - self.start) / done * task.remaining


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
    events: Callable[[Any, Any, Any, Eta], Callable[[str, dict[str, Any]], None]],
    finished: tuple[str, ...],
) -> tuple[Any, Any, Any, list[int]] | int:
    """What search and al share: ``--tui`` hands over to the TUI; else load and check the
    config (exit 2 before any work), run the study on Ray under a progress bar of
    ``total(resolved)`` steps fed by ``events(resolved, progress, task, eta)``, SIGTERM as
    Ctrl-C; a resumed study's bar starts at its trials in a ``finished`` state. Returns
    (resolved, store, study, SIGTERMs received), or the exit code when the store failed or
    the run stopped before the study was stored."""
    from autoplat.core.store import Store

    if args.tui:
        from autoplat.tui.launch import run_with_tui

        return run_with_tui(args, command)
    resolved = load(args.config, load_registry(args))
    cfg = resolved.config
    store = Store(storage(args, cfg.study.storage))
    eta = Eta()
    before = store.find_study(cfg.study.name) if args.resume else None
    done = 0 if before is None else sum(t.state in finished for t in store.trials(before.id))
    with _progress() as progress:
        task = progress.add_task(
            cfg.study.name,
            total=total(resolved),
            completed=done,
            status="starting Ray",
            best="",
            eta=eta,
        )
        on_event = events(resolved, progress, task, eta)
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


def _search_events(resolved: Any, progress: Any, task: Any, eta: Eta) -> Callable[..., None]:
    """The progress of a search: each trial's start, epochs, end, the time left and the
    best so far."""
    metric = resolved.config.study.metric
    sign = 1 if resolved.direction == "maximize" else -1
    best: list[float] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        trial = f"trial {data['number']}"
        if kind == "start":
            eta.start(data["number"])
            progress.update(task, status=f"{trial} started")
        elif kind == "result":
            value = data["metrics"].get(metric)
            if value is not None:
                progress.update(task, status=f"{trial} epoch {data['step']} {metric}={value:.4f}")
        elif kind == "retry":
            line = _retry_line(trial, data, resolved.config.resources.max_failures)
            progress.console.print(line, markup=False)
        elif kind == "end":
            eta.end(data["number"])
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
                progress.update(task, best=f"best {metric}={best[0]:.4f}")

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

    started = _ray_study(
        "search",
        args,
        load_config,
        run_study,
        _search_trials,
        _search_events,
        ("complete", "pruned", "fail"),
    )
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


def _waiting(progress: Any, task: Any, who: str, data: dict[str, Any], told: set) -> None:
    """A file oracle waits for a person: the status line names the file and the number
    of ids; the first report of a round (``told`` holds those printed) prints where to
    label it, each later one how far the query file got (or what is wrong in it)."""
    query, where = data["query"], f"{who} round {data['round']}"
    progress.update(task, status=f"waiting for {data['ids']} labels: {query} ({who})")
    if where not in told:
        told.add(where)
        images = f"; images: {data['images']}" if data.get("images") else ""
        progress.console.print(
            f"{where}: label {data['ids']} ids: fill the label column of {query} (or write "
            f"{data['labels']}){images}",
            markup=False,
        )
    if data["status"] != f"0 of {data['ids']} labeled":
        progress.console.print(f"{where}: {data['status']}", markup=False)


def cmd_al(args: argparse.Namespace) -> int:
    from autoplat.core.al_study import learning_curves, load_al_config, run_al
    from autoplat.core.runner import exit_code
    from autoplat.core.store import StudyState

    failures: list[dict[str, Any]] = []  # the "end" events of experiments that failed now

    def experiments(resolved: Any) -> int:
        return len(resolved.acquisitions) * len(resolved.config.study.seed_list())

    def events(resolved: Any, progress: Any, task: Any, eta: Eta) -> Callable[..., None]:
        cfg = resolved.config
        human = cfg.oracle.name == "file"
        if human:
            folder = Path(cfg.oracle.path) / cfg.study.name
            fmt = cfg.oracle.format
            err.print(
                f"file oracle: each round's query appears in {folder}/ as *.query.{fmt} (image "
                f"pools: with *.sheet.png); fill its label column, or write *.labels.{fmt}",
                markup=False,
            )
            progress.update(task, eta=None)  # a person's pace: nothing to predict from
        best: list[tuple[float, str]] = []
        told: set[str] = set()

        def on_event(kind: str, data: dict[str, Any]) -> None:
            who = f"{data['acquisition']} seed {data['seed']}"
            key = (data["acquisition"], data["seed"])
            if kind == "start":
                eta.start(key)
            elif kind == "retry":
                line = _retry_line(who, data, cfg.resources.max_failures)
                progress.console.print(line, markup=False)
            elif kind == "waiting":
                _waiting(progress, task, who, data, told)
            elif kind == "round":
                eta.progress(key, (data["round"] + 1) / data["rounds"])
                accuracy = data.get("test_accuracy", float("nan"))
                progress.update(
                    task, status=f"{who}: {data['n_labeled']} labels, test acc {accuracy:.3f}"
                )
                if data["round"] + 1 == data["rounds"] and accuracy == accuracy:
                    best[:] = [max([*best, (accuracy, who)])]
                    progress.update(task, best=f"best test acc {best[0][0]:.3f} ({best[0][1]})")
            elif kind == "end":
                eta.end(key)
                progress.advance(task)
                if data.get("error"):
                    failures.append(data)
                line = f"{who} {data['state']}"
                progress.console.print(
                    line + (f": {data['error']}" if data.get("error") else ""), markup=False
                )

        return on_event

    started = _ray_study("al", args, load_al_config, run_al, experiments, events, ("complete",))
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
    phases = {"fit": "first pass (counts, fits)", "score": f"scoring: {names}"}
    name, progress = resolved.config.study.name, _progress()
    first = progress.add_task(name, total=None, status=f"setting up: {names}", best="", eta=None)
    progress.start()  # at once: setting up scorers and reading the input take a while
    passes: dict[str, Any] = {}  # phase -> its bar: the first one, then one per pass

    def on_progress(phase: str, done: int, total: int) -> None:
        if not total:
            progress.update(first, status="reading input")
            return
        if phase not in passes:
            passes[phase] = progress.add_task(name, status="", best="") if passes else first
            progress.update(passes[phase], eta=PassEta(done))
        progress.update(passes[phase], completed=done, total=total, status=phases[phase])

    try:
        with _sigterm_as_ctrl_c() as sigterm:
            run_curation(resolved, store, resume=args.resume, progress=on_progress)
    except KeyboardInterrupt:
        progress.stop()
        return _interrupted("chunks are kept", "curate", args, sigterm)
    except BaseException:
        progress.live.transient = True  # the error prints alone
        raise
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
