"""The `platform` command: parse arguments, call core, print."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from autoplat import __version__
from autoplat.core.errors import AutoplatError, StoreFault
from autoplat.core.store import DEFAULT_URL, Store, Study, StudyState, TrialState

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _storage(args: argparse.Namespace, default: str | None = None) -> str:
    return args.storage or default or DEFAULT_URL


def _varying_keys(params: list[dict[str, Any]]) -> list[str]:
    """Keys whose value differs between trials (all keys when there is one trial)."""
    keys = list(dict.fromkeys(k for p in params for k in p))
    if len(params) < 2:
        return keys
    return [k for k in keys if len({json.dumps(p.get(k)) for p in params}) > 1]


def leaderboard(summary: dict[str, Any], top: int | None = None) -> Table:
    """Completed trials ranked by value; the best also shows the metric on the test split."""
    study = summary["study"]
    metric = study["metric"]
    done = [t for t in summary["trials"] if t["state"] == "complete" and t["value"] is not None]
    done.sort(key=lambda t: t["value"], reverse=study["direction"] == "maximize")
    varying = _varying_keys([t["params"] for t in summary["trials"]])
    table = Table(title=f"study '{study['name']}' · {metric} ({study['direction']})")
    test_metric = "test_" + metric.removeprefix("val_")
    test_column = "test acc" if test_metric == "test_accuracy" else test_metric
    for column in ("rank", "trial", "params", metric, test_column, "duration"):
        table.add_column(column, overflow="fold")
    for rank, t in enumerate(done[:top] if top else done, 1):
        test = t["metrics"].get(test_metric) if rank == 1 else None
        duration = f"{t['duration_s']:.1f}s" if t["duration_s"] is not None else ""
        table.add_row(
            str(rank),
            str(t["number"]),
            _params_text({k: t["params"][k] for k in varying if k in t["params"]}),
            f"{t['value']:.4f}",
            f"{test:.4f}" if test is not None else "",
            duration,
        )
    return table


def pareto_table(summary: dict[str, Any]) -> Table:
    """The trials on the Pareto front of a multi-objective study, by its first objective."""
    objectives = summary["study"]["objectives"]
    by_number = {t["number"]: t for t in summary["trials"]}
    front = [by_number[n] for n in summary["pareto_front"]]
    varying = _varying_keys([t["params"] for t in summary["trials"]])
    table = Table(
        title=f"Pareto front ({len(front)} trials): "
        + ", ".join(f"{name} ({direction})" for name, direction in objectives.items())
    )
    for column in ("trial", "params", *objectives):
        table.add_column(column, overflow="fold")
    for t in front:
        params = _params_text({k: t["params"][k] for k in varying if k in t["params"]})
        values = [f"{t['metrics'][name]:.6g}" for name in objectives]
        table.add_row(str(t["number"]), params, *values)
    return table


def _print_study(store: Store, study: Study, top: int | None) -> None:
    summary = store.summary(study)
    out.print(leaderboard(summary, top))
    if "pareto_front" in summary:
        out.print(pareto_table(summary))
    counts = {k: v for k, v in summary["study"]["trial_counts"].items() if v}
    out.print("trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for t in summary["trials"]:
        if t["state"] == "fail":
            out.print(f"trial {t['number']} failed: {t['error']}", markup=False)
    best = summary["best"]
    if best:
        out.print(f"best trial {best['number']}: " + _params_text(best["params"]))
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in sorted(best["metrics"].items()))
        out.print(f"best metrics: {metrics}")
        for kind, path in best["artifacts"].items():
            out.print(f"best {kind}: {path}")


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

    from autoplat.core.study import shutdown_ray

    started = not ray.is_initialized()
    try:
        yield
    finally:
        if started and ray.is_initialized():
            shutdown_ray(keep_files)


def _stored_line(store: Store, study: Study) -> str:
    """Where the results are, and the command that shows them again (with its --storage)."""
    storage = "" if store.url == DEFAULT_URL else f" --storage {store.display_url}"
    return (
        f"results stored in {store.display_url} (study '{study.name}'); "
        f"view again with: platform show {study.name}{storage}"
    )


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


def cmd_search(args: argparse.Namespace) -> int:
    from autoplat.core.config import load_config
    from autoplat.core.interfaces import OneShotStrategy
    from autoplat.core.study import run_study

    if args.tui:
        from autoplat.tui.launch import run_with_tui

        return run_with_tui(args, "search")
    registry = _registry(args)
    resolved = load_config(args.config, registry)
    cfg = resolved.config
    store = Store(_storage(args, cfg.study.storage))
    metric = cfg.study.metric
    best: list[float] = []

    with _progress() as progress:
        one_shot = issubclass(resolved.strategy_cls, OneShotStrategy)  # 1 + derived trials
        total = None if one_shot else cfg.study.trials
        task = progress.add_task(cfg.study.name, total=total, status="starting Ray")

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "start":
                progress.update(task, status=f"trial {data['number']} started")
            elif kind == "result":
                value = data["metrics"].get(metric)
                if value is not None:
                    progress.update(
                        task,
                        status=f"trial {data['number']} epoch {data['step']} {metric}={value:.4f}",
                    )
            elif kind == "retry":
                progress.console.print(
                    f"trial {data['number']}: its worker died ({data['error']}); retry "
                    f"{data['retries']} of {cfg.resources.max_failures}",
                    markup=False,
                )
            elif kind == "end":
                progress.advance(task)
                value = data.get("value")
                if data["state"] == "complete" and value is not None:
                    sign = 1 if resolved.direction == "maximize" else -1
                    if not best or sign * value > sign * best[0]:
                        best[:] = [value]
                    line = f"trial {data['number']} complete: {metric}={value:.4f}"
                else:
                    line = f"trial {data['number']} {data['state']}"
                    if data.get("error"):
                        line += f": {data['error']}"
                progress.console.print(line, markup=False)
                if best:
                    progress.update(task, status=f"best {metric}={best[0]:.4f}")

        sigterm, code = _drive(
            "search",
            args,
            progress,
            cfg.study.keep_ray_files,
            lambda: run_study(
                resolved, store, address=args.address, resume=args.resume, on_event=on_event
            ),
        )
    if code is not None:
        return code
    study = store.find_study(cfg.study.name)
    if study is None:
        return _stopped_before_start(sigterm)
    if args.json:
        print(json.dumps(store.summary(study), indent=2))
    else:
        _print_study(store, study, top=10)
        out.print(_stored_line(store, study))
    if study.state == StudyState.INTERRUPTED or sigterm:
        return _interrupted("trials are stored", "search", args, sigterm)
    trials = store.trials(study.id)
    errors = [t.error or "" for t in trials if t.state == TrialState.FAIL]
    if errors and not any(t.state == TrialState.COMPLETE for t in trials):
        err.print(
            f"no trial completed ({len(errors)} failed, above); fix the cause, then run a new "
            "study or continue with --resume",
            markup=False,
        )
        # bad data is the user's to fix (exit 2); anything else is a failure
        return 2 if any(e.split(":", 1)[0].endswith("DataError") for e in errors) else 1
    return 0


def cmd_al(args: argparse.Namespace) -> int:
    from autoplat.core.al_study import learning_curves, load_al_config, run_al

    if args.tui:
        from autoplat.tui.launch import run_with_tui

        return run_with_tui(args, "al")
    registry = _registry(args)
    resolved = load_al_config(args.config, registry)
    cfg = resolved.config
    store = Store(_storage(args, cfg.study.storage))
    experiments = len(resolved.acquisitions) * len(cfg.study.seed_list())
    failures: list[str] = []
    with _progress() as progress:
        task = progress.add_task(cfg.study.name, total=experiments, status="starting Ray")

        def on_event(kind: str, data: dict[str, Any]) -> None:
            who = f"{data['acquisition']} seed {data['seed']}"
            if kind == "retry":
                progress.console.print(
                    f"{who}: its worker died ({data['error']}); retry {data['retries']} of "
                    f"{cfg.resources.max_failures}",
                    markup=False,
                )
            elif kind == "round":
                accuracy = data.get("test_accuracy", float("nan"))
                progress.update(
                    task, status=f"{who}: {data['n_labeled']} labels, test acc {accuracy:.3f}"
                )
            elif kind == "end":
                progress.advance(task)
                if data.get("error"):
                    failures.append(data["error"])
                line = f"{who} {data['state']}"
                progress.console.print(
                    line + (f": {data['error']}" if data.get("error") else ""), markup=False
                )

        if cfg.oracle.name == "file":
            folder = Path(cfg.oracle.path) / cfg.study.name
            err.print(
                f"file oracle: queries appear in {folder}/ as *.query.{cfg.oracle.format}; "
                f"write the labeled copy as *.labels.{cfg.oracle.format} next to each"
            )
        sigterm, code = _drive(
            "al",
            args,
            progress,
            cfg.study.keep_ray_files,
            lambda: run_al(
                resolved, store, address=args.address, resume=args.resume, on_event=on_event
            ),
        )
    if code is not None:
        return code
    study = store.find_study(cfg.study.name)
    if study is None:
        return _stopped_before_start(sigterm)
    curves = learning_curves(store.al_rounds(study.id))
    if args.json:
        print(json.dumps(_al_json(store, study, curves), indent=2))
    else:
        _print_al_study(store, study, curves)
        out.print(_stored_line(store, study))
    if study.state == StudyState.INTERRUPTED or sigterm:
        return _interrupted("rounds are stored", "al", args, sigterm)
    if failures:
        err.print(
            f"{len(failures)} experiments failed (above); fix the cause and continue with: "
            + _resume_command("al", args)
        )
        # bad labels or data are the user's to fix (exit 2); anything else is a failure
        return 2 if any(f.split(":", 1)[0].endswith("DataError") for f in failures) else 1
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from autoplat.core.curation import load_curate_config, run_curation

    registry = _registry(args)
    resolved = load_curate_config(args.config, registry)
    store = Store(_storage(args, resolved.config.study.storage))
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
    _print_curate_study(store, study)
    out.print(_stored_line(store, study))
    return 0


def curate_table(summary: dict[str, Any], artifacts: dict[str, str]) -> Table:
    """Records kept by each scorer and in all, with each scorer's headline numbers."""
    table = Table(
        title=f"curation '{summary['study']['name']}' ({summary['study']['state']})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("scorer", "kept", "of", "kept %", "summary"):
        table.add_column(column, overflow="fold")
    totals = None
    for t in summary["trials"]:
        records = t["metrics"].get("records", 0)
        kept = t["metrics"].get("kept", 0)
        attrs = t.get("attrs") or {}
        totals = attrs.get("run", totals)
        headline = {
            k: v
            for k, v in (attrs.get("summary") or {}).items()
            if isinstance(v, int | float | str)
        }
        table.add_row(
            t["params"].get("scorer", "?"),
            f"{kept:.0f}",
            f"{records:.0f}",
            f"{100 * kept / records:.1f}" if records else "",
            _params_text(dict(list(headline.items())[:6])),
        )
    if totals:
        n, kept = totals["records"], totals["kept"]
        table.add_row("all", str(kept), str(n), f"{100 * kept / n:.1f}" if n else "", "")
    if artifacts:
        table.caption = " · ".join(f"{k}: {v}" for k, v in artifacts.items())
    return table


def _print_curate_study(store: Store, study: Study) -> None:
    summary = store.summary(study)
    artifacts = {a.kind: a.path for a in store.artifacts(study.id)}
    out.print(curate_table(summary, artifacts))
    for t in summary["trials"]:
        if t["state"] == "fail":
            out.print(f"{t['params'].get('scorer')} failed: {t['error']}", markup=False)


def cmd_runs(args: argparse.Namespace) -> int:
    store = Store(_storage(args), create=False)
    summaries = [
        store.summary(s)["study"] | {"best": _best_value(store, s)} for s in store.studies()
    ]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    table = Table(title=f"studies in {store.display_url}")
    table.add_column("name", no_wrap=True)
    for column in ("kind", "state", "done", "running", "failed", "best", "started"):
        table.add_column(column)
    for s in summaries:
        c = s["trial_counts"]
        best = s["best"]
        table.add_row(
            s["name"],
            s["kind"],
            s["state"],
            str(c["complete"] + c["pruned"]),
            str(c["running"]),
            str(c["fail"]),
            f"{best:.4f}" if best is not None else "",
            s["started_at"][:19],
        )
    out.print(table)
    return 0


def _best_value(store: Store, study: Study) -> float | None:
    best = store.best_trial(study)
    return best.value if best else None


def cmd_show(args: argparse.Namespace) -> int:
    store = Store(_storage(args), create=False)
    study = store.get_study(args.study)
    if args.csv or args.history:
        from autoplat.cli_results import show_rows

        return show_rows(store, study, args)
    if study.kind == "al":
        from autoplat.core.al_study import learning_curves

        curves = learning_curves(store.al_rounds(study.id))
        if args.json:
            print(json.dumps(_al_json(store, study, curves), indent=2))
        else:
            _print_al_study(store, study, curves)
        return 0
    if study.kind == "curate":
        if args.json:
            summary = store.summary(study)
            summary["artifacts"] = {a.kind: a.path for a in store.artifacts(study.id)}
            print(json.dumps(summary, indent=2))
        else:
            _print_curate_study(store, study)
        return 0
    if args.json:
        print(json.dumps(store.summary(study), indent=2))
    else:
        _print_study(store, study, args.top)
    return 0


def _al_json(store: Store, study: Study, curves: dict[str, Any]) -> dict[str, Any]:
    """An AL study as JSON: the study, mean/std curves, and every seed's rounds (labels,
    metrics, queried ids and their labels) under ``per_seed``."""
    from autoplat.core.results import al_curves_by_seed, al_rows

    per_seed = al_curves_by_seed(al_rows(store, study))
    return {"study": store.summary(study)["study"], "curves": curves, "per_seed": per_seed}


def _print_al_study(store: Store, study: Study, curves: dict[str, Any]) -> None:
    """Learning curves (mean +- std over seeds at each label count) and AULC per acquisition."""
    counts = sorted({n for c in curves.values() for n in c["labels"]})
    every = max(1, -(-(len(counts) - 1) // 3))  # at most 4 label columns: 80 characters
    shown = [*counts[:-1:every], counts[-1]] if counts else []
    table = Table(
        title=f"'{study.name}': {study.metric} by labels (mean over seeds)",
        caption="--json: every point with its std",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("acquisition", "AULC ± std", "÷random", "seeds", *map(str, shown)):
        table.add_column(column, no_wrap=True)
    random_aulc = (curves.get("random") or {}).get("aulc")
    ranked = sorted(curves.items(), key=lambda kv: -(kv[1]["aulc"] or (0.0, 0.0))[0])
    for name, c in ranked:
        at = dict(zip(c["labels"], zip(c["mean"], c["std"], strict=True), strict=True))
        area = c["aulc"]
        ratio = f"{area[0] / random_aulc[0]:.3f}" if area and random_aulc else ""
        table.add_row(
            name,
            f"{area[0]:.3f}±{area[1]:.3f}" if area else "",
            ratio,
            str(c["complete_seeds"]),
            *(f"{at[n][0]:.3f}" if n in at else "" for n in shown),
        )
    out.print(table)
    counts_by_state = {k: v for k, v in store.summary(study)["study"]["trial_counts"].items() if v}
    out.print("experiments: " + ", ".join(f"{v} {k}" for k, v in counts_by_state.items()))
    for t in store.trials(study.id):
        if t.state == "fail":
            out.print(
                f"{t.params_dict['acquisition']} seed {t.params_dict['seed']} failed: {t.error}",
                markup=False,
            )


def _registers(plugin: Any) -> str:
    """What a plugin registered, one kind a line; then hooks that register no names
    (e.g. commands) and its load errors."""
    lines = [f"{kind}: {', '.join(names)}" for kind, names in plugin.registered.items()]
    other = [h.removeprefix("register_") for h in plugin.hooks]
    other = [h for h in other if h not in plugin.registered]
    if other:
        lines.append(f"hooks: {', '.join(other)}")
    return "\n".join(lines + [f"error: {e}" for e in plugin.errors])


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = sorted(_registry(args, warn=False).plugins.values(), key=lambda p: p.name)
    if args.json:
        print(json.dumps([p.to_dict() for p in plugins], indent=2))
        return 0
    table = Table(title="plugins")
    table.add_column("plugin", no_wrap=True)
    table.add_column("package", max_width=16)  # "autoplat 0.1.0": one line
    table.add_column("status", no_wrap=True)
    table.add_column("registers", ratio=1)
    for p in plugins:
        package = " ".join(filter(None, [p.package, p.version]))
        table.add_row(p.name, package, p.status, _registers(p))
    out.print(table)
    return 0


def cmd_plugins_new(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoplat.core.scaffold import new_plugin

    path = new_plugin(args.name, Path(args.dir))
    out.print(f"created {path}; next: pip install -e {path} && pytest {path}")
    return 0


def cmd_experts(args: argparse.Namespace) -> int:
    from autoplat.plugins.scorers.embedding.experts import evaluate_experts

    task = [c.strip() for c in args.classes.split(",")] if args.classes else None
    store = Store(_storage(args), create=False)
    report = evaluate_experts(store, args.study, args.curation, task)
    if args.json:
        out.print(json.dumps(report.to_dict(), indent=2), markup=False)
        return 0
    table = Table(
        title=f"data experts of '{report.study}' (MoDE weights from '{report.curation}', "
        f"rule {report.weighting}) · "
        f"zero-shot accuracy on {report.test_images} test images"
    )
    for column in ("expert", "trial", "weight", "accuracy"):
        table.add_column(column)
    for e in report.experts:
        table.add_row(str(e.expert), str(e.trial), f"{e.weight:.3f}", f"{e.accuracy:.4f}")
    table.add_row("uniform ensemble", "", "", f"{report.uniform_accuracy:.4f}")
    table.add_row("MoDE ensemble", "", "", f"{report.weighted_accuracy:.4f}")
    table.add_row("best single expert", "", "", f"{report.best_expert_accuracy:.4f}")
    out.print(table)
    out.print(f"classes: {', '.join(report.classes)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autoplat.core.export import (
        check_out,
        export_trial,
        find_trial,
        load_trial_model,
        protected_files,
    )

    _registry(args)  # --plugin: the modules the study's architecture and dataset come from
    store = Store(_storage(args), create=False)  # read only: export writes nothing to it
    study, trial = find_trial(store, args.study, args.trial)
    target = Path(args.out or f"{study.name}-trial{trial.number}.onnx")
    protected = protected_files(store)
    check_out(target, protected, args.force)  # before any work; each part's file again below
    tm = load_trial_model(store, study.name, trial.number)
    try:
        done = export_trial(
            tm,
            target,
            tolerance=args.tolerance,
            opset=args.opset,
            force=args.force,
            protected=protected,
        )
    except OSError as exc:
        err.print(f"error: cannot write the ONNX file(s) for {target}: {exc}", markup=False)
        return 1
    if args.json:
        print(json.dumps(_export_json(tm, done, args), indent=2))
        return 0
    value = f"{tm.trial.value:.4f}" if tm.trial.value is not None else "?"
    head = f"exported trial {tm.trial.number} of study '{tm.study.name}' "
    head += f"({tm.study.metric}={value})"
    if len(done) == 1:
        (one,) = done
        out.print(
            f"{head} to {one.path} ({one.path.stat().st_size / 1e6:.2f} MB, opset {args.opset}, "
            "dynamic batch)"
        )
        out.print(
            f"parity on {one.parity_inputs} test inputs: max |onnxruntime - torch| = "
            f"{one.max_abs_diff:.3g} (tolerance {args.tolerance:g})"
        )
    else:
        out.print(f"{head} as {len(done)} files, one per part (opset {args.opset}, dynamic batch):")
        for d in done:
            out.print(
                f"  {d.part}: {d.path} ({d.path.stat().st_size / 1e6:.2f} MB); parity on "
                f"{d.parity_inputs} test inputs: max |onnxruntime - torch| = "
                f"{d.max_abs_diff:.3g} (tolerance {args.tolerance:g})"
            )
    examples = {"image": "IMAGE.png", "text": '"a caption"', "video": "FRAMES_DIR/ or VIDEO.npy"}
    examples |= {"audio": "SOUND.wav"}
    for d in done:
        modality = json.loads(d.metadata["preprocessing"]).get("modality", "")
        example = examples.get(modality, "FEATURES.csv or ARRAY.npy")
        ranks = "parts" in d.metadata and modality in {"image", "video"}
        texts = ' --texts "a caption" ...' if ranks else ""
        out.print(f"predict with: platform predict {d.path} {example} ...{texts}")
    return 0


def _export_json(tm: Any, done: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """What `export --json` prints: the trial exported and each file with its parity."""
    return {
        "study": tm.study.name,
        "trial": tm.trial.number,
        "metric": tm.study.metric,
        "value": tm.trial.value,
        "opset": args.opset,
        "tolerance": args.tolerance,
        "files": [
            {
                "part": d.part,
                "path": str(d.path),
                "bytes": d.path.stat().st_size,
                "parity_inputs": d.parity_inputs,
                "max_abs_diff": d.max_abs_diff,
            }
            for d in done
        ],
    }


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from autoplat.core.export import (
        PredictError,
        load_inputs,
        model_info,
        open_session,
        predict,
        rank_texts,
        run_batches,
    )

    session = open_session(args.model)
    info = model_info(session)
    names, x = load_inputs(args.inputs, info, invert=args.invert)
    if info.output == "logits" and not args.texts:
        rows = predict(session, x, info.labels, args.batch_size)
        if args.out:
            np.save(args.out, run_batches(session, x, args.batch_size))
        if args.json:
            results = [
                {"input": name, "label": label, "index": index, "probability": prob}
                for name, (label, index, prob) in zip(names, rows, strict=True)
            ]
            print(json.dumps(results, indent=2))
            return 0
        table = Table(title=f"{args.model} · {session.get_providers()[0]}")
        for column in ("input", "label", "probability"):
            table.add_column(column, overflow="fold")
        for name, (label, _, prob) in zip(names, rows, strict=True):
            table.add_row(name, label, f"{prob:.4f}")
        out.print(table)
        return 0
    if info.output == "logits":
        raise PredictError("--texts ranks captions with an embedding model (clip, video-text)")
    y = run_batches(session, x, args.batch_size)
    if args.out:
        np.save(args.out, y)
    if args.texts:
        probs = rank_texts(args.model, info, y, args.texts, args.batch_size)
        if args.json:
            results = [
                {"input": n, "texts": dict(zip(args.texts, map(float, p), strict=True))}
                for n, p in zip(names, probs, strict=True)
            ]
            print(json.dumps(results, indent=2))
            return 0
        table = Table(title=f"{args.model} · zero-shot over {len(args.texts)} texts")
        for column in ("input", "best text", "probability"):
            table.add_column(column, overflow="fold")
        for name, p in zip(names, probs, strict=True):
            table.add_row(name, args.texts[int(p.argmax())], f"{p.max():.4f}")
        out.print(table)
        return 0
    if args.json:
        values = [{"input": n, info.output: v.tolist()} for n, v in zip(names, y, strict=True)]
        print(json.dumps(values))
        return 0
    table = Table(title=f"{args.model} · {info.output} {tuple(y.shape[1:])}")
    for column in ("input", "norm", "first values"):
        table.add_column(column, overflow="fold")
    for name, v in zip(names, y, strict=True):
        flat = v.reshape(-1)
        first = " ".join(f"{value:+.3f}" for value in flat[:4]) + (" ..." if flat.size > 4 else "")
        table.add_row(name, f"{np.linalg.norm(flat):.4f}", first)
    out.print(table)
    if args.out:
        out.print(f"wrote {y.shape} to {args.out}")
    return 0


def _registry(args: argparse.Namespace, warn: bool = True):
    """The plugin registry with the ``--plugin`` modules and the config's ``[plugins]``
    modules loaded (one that is not there: exit 2); with ``warn``, plugins that failed are
    warned about."""
    from autoplat.core.config import load_plugins, read_config
    from autoplat.core.errors import PluginError
    from autoplat.core.registry import get_registry

    registry = get_registry()
    try:
        for spec in getattr(args, "plugin", None) or []:
            try:
                registry.load_module(spec)
            except PluginError as exc:
                raise PluginError(f"--plugin {spec}: {exc}") from None
        if getattr(args, "config", None):
            load_plugins(*read_config(Path(args.config)), registry)
    finally:  # also before an error in the config: a broken plugin may be its cause
        if warn:
            _warn_plugin_errors(registry)
    return registry


def _warn_plugin_errors(registry) -> None:
    for plugin, message in registry.errors():
        package = f" (package {plugin.package} {plugin.version})" if plugin.package else ""
        err.print(
            f"warning: plugin '{plugin.name}'{package} skipped part of its load: {message}; "
            "see `platform plugins`"
        )


def _add_plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        metavar="PATH_OR_MODULE",
        help="load a local plugin module (a .py file, or a module name); repeatable",
    )


class HelpFormatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog to the terminal on its own, and keeps
    indented lines (example commands) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line
            if line.startswith(" ") or not line
            else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
            for line in text.splitlines()
        )


def add_command(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` starts with a one-line description and ends with
    ``example:`` and the example command(s), one per line."""
    lines = "\n".join(f"  {line}" for line in example.splitlines())
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"example:\n{lines}",
        formatter_class=HelpFormatter,
    )


def add_storage_option(p: argparse.ArgumentParser, extra: str = "") -> None:
    """``--storage URL``, the same in every command."""
    p.add_argument(
        "--storage",
        metavar="URL",
        help=f"SQLAlchemy URL of the results store (default {DEFAULT_URL}){extra}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="platform",
        description="AutoML and active learning: search, watch, export.",
        epilog="`platform COMMAND --help` describes a command and gives an example.",
    )
    parser.add_argument("--version", action="version", version=f"autoplat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db = "--storage sqlite:///runs/quickstart.db"

    p = add_command(
        sub,
        "search",
        "run an architecture/hyperparameter search",
        "platform search examples/quickstart.toml --tui\n"
        "platform search examples/quickstart.toml --resume",
    )
    p.add_argument("config", help="path to a config TOML file")
    add_storage_option(p, "; overrides [study].storage")
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join the Ray cluster at this address (or RAY_ADDRESS)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted study")
    p.add_argument("--tui", action="store_true", help="watch the search live in the TUI")
    _add_plugin_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_search)

    p = add_command(
        sub,
        "al",
        "run active-learning experiments (acquisitions x seeds)",
        "platform al examples/al_digits.toml --storage sqlite:///runs/al.db --tui",
    )
    p.add_argument("config", help="path to an active-learning config TOML file")
    add_storage_option(p, "; overrides [study].storage")
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join the Ray cluster at this address (or RAY_ADDRESS)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted study")
    p.add_argument("--tui", action="store_true", help="watch the experiments live in the TUI")
    _add_plugin_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_al)

    p = add_command(
        sub,
        "curate",
        "score and filter record files with data-quality scorers",
        "platform curate examples/curate_alt_texts.toml --storage sqlite:///runs/c.db",
    )
    p.add_argument("config", help="path to a curation config TOML file")
    add_storage_option(p, "; overrides [study].storage")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    _add_plugin_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_curate)

    p = add_command(sub, "runs", "list studies in the store", f"platform runs {db}")
    add_storage_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_runs)

    p = add_command(
        sub,
        "show",
        "print a study's leaderboard and best params",
        f"platform show quickstart {db} --top 5\nplatform show quickstart {db} --csv",
    )
    p.add_argument("study", help="study name")
    add_storage_option(p)
    p.add_argument("--top", type=int, default=None, metavar="N", help="show only the best N trials")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--csv", action="store_true", help="print the trials table (an AL study: its rounds) as CSV"
    )
    p.add_argument(
        "--history",
        action="store_true",
        help="print every metric of every epoch (trial, step, metric, value): CSV, or --json",
    )
    p.set_defaults(func=cmd_show)

    p = add_command(
        sub,
        "experts",
        "MoDE: each data expert's model and their weighted ensemble, zero-shot on test",
        "platform experts mode-experts --curation mode-captions \\\n    --classes circle,square",
    )
    p.add_argument("study", help="a search study over [space] dataset.expert")
    p.add_argument(
        "--curation",
        required=True,
        metavar="STUDY",
        help="the curate study whose mode scorer made the experts",
    )
    add_storage_option(p)
    p.add_argument(
        "--classes",
        metavar="A,B,...",
        help="the task: comma-separated class names (default: every class)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_experts)

    p = add_command(
        sub,
        "export",
        "export a trial's model to ONNX, checked against torch",
        f"platform export quickstart {db} \\\n    --trial 3 --out digits.onnx",
    )
    p.add_argument("study", help="study name")
    p.add_argument("--trial", type=int, metavar="N", help="trial number (default: the best trial)")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="output file (default: STUDY-trialN.onnx) in an existing folder; a model of "
        "several parts (towers) writes FILE.<part>.onnx for each, e.g. model.image.onnx and "
        "model.text.onnx. Files are written only when every part passed its parity check "
        "(to a temporary name, then renamed): a failed export leaves no file. Never "
        "overwrites an existing file without --force, nor ever the store's own files or "
        "the checkpoints it records",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_storage_option(p)
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        metavar="X",
        help="largest |onnxruntime - torch| allowed on the test inputs (default 1e-4)",
    )
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    _add_plugin_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=cmd_export)

    p = add_command(
        sub,
        "predict",
        "run an exported model on images, videos, audio, text, .npy or tables",
        "platform predict digits.onnx seven.png more.npy --json\n"
        'platform predict clip.image.onnx a.png --texts "a red circle" "a blue square"',
    )
    p.add_argument("model", help="an .onnx file written by `platform export`")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, frame folders, audio files, texts (or .txt files of lines) for a "
        "text part, .npy/.npz arrays, CSV/Parquet of features",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="examples per run (default 64)"
    )
    p.add_argument(
        "--invert", action="store_true", help="invert images (dark ink on light background)"
    )
    p.add_argument(
        "--texts",
        nargs="+",
        metavar="TEXT",
        help="rank these texts for each input (zero-shot) with the text part exported beside "
        "an image or video part; give it after the inputs",
    )
    p.add_argument(
        "--out", metavar="FILE", help="save the outputs (logits, embeddings, ...) as a .npy file"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    from autoplat.cli_results import add_commands

    add_commands(sub)

    p = add_command(
        sub,
        "plugins",
        "list plugins, what they register, and load errors",
        "platform plugins --plugin ./my_scorer.py\nplatform plugins new autoplat-mynet --dir ~/src",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_plugin_option(p)
    p.set_defaults(func=cmd_plugins)
    plugin_sub = p.add_subparsers(
        dest="plugins_command", title="actions (optional)", metavar="[new]"
    )
    p = add_command(
        plugin_sub,
        "new",
        "scaffold a plugin package from the template",
        "platform plugins new autoplat-mynet --dir ~/src",
    )
    p.add_argument("name", help="package name, e.g. autoplat-mynet")
    p.add_argument(
        "--dir", default=".", metavar="DIR", help="parent folder of the new package (default: .)"
    )
    p.set_defaults(func=cmd_plugins_new)
    return parser


def main(argv: list[str] | None = None) -> int:
    from autoplat.core.registry import get_registry

    parser = build_parser()
    try:
        get_registry().pm.hook.register_commands(cli=parser._subparsers._group_actions[0])
    except Exception as exc:  # noqa: BLE001 - a plugin's command must not break the CLI
        err.print(f"warning: a plugin failed to add its commands: {exc}")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except StoreFault as exc:  # the store failed mid-run: not bad input
        err.print(f"error: {exc}", markup=False)
        return 1
    except AutoplatError as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    except BrokenPipeError:  # e.g. `platform show STUDY --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
