"""A short study end to end: `platform search` (Ray Tune) against Optuna in-process.

50 TPE trials of an MLP on digits (about 0.35 s each on an idle core), the same config,
the same trainer (the architecture's ``train``) and the same per-trial seeds. Every row is
a fresh process and its whole wall time counts (interpreter, imports, data, Ray, teardown):

- ``platform search``: the command, starting its own local Ray.
- ``platform search --address``: the command joining a Ray that is already running (this
  benchmark starts one first, as a user's ``ray start --head`` would).
- ``optuna, n_jobs=K``: ``study.optimize(objective, n_jobs=K)`` in one process, K =
  platform's concurrency (CPUs / cpus_per_trial); each trial builds and trains the model
  as platform's worker does. The reference: ratio = platform / this.
- ``optuna, sequential``: the same, one trial at a time.

Fixed cost of a row = time from the process start to its first trial's start + time from
its last trial's end to the process exit (the store's, or Optuna's, trial timestamps).
Targets (issue 21): platform <= 1.2x Optuna; platform's fixed cost <= 3 s on an idle machine.
Rows run interleaved, ``--repeats`` times; the table shows the best (lowest) run.

Usage::

    python benchmarks/short_study.py                 # 50 trials, 2 repeats, a few minutes
    python benchmarks/short_study.py --quick         # 10 trials, 1 repeat
    python benchmarks/short_study.py --json short.json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.2  # platform search within 1.2x of Optuna in-process (n_jobs = concurrency)
TARGET_FIXED_S = 3.0  # platform's fixed cost per study, idle machine
HERE = Path(__file__).resolve()
BIN = Path(sys.executable).parent

CONFIG = """\
[study]
name = "short"
trials = {trials}
seed = 0
metric = "val_accuracy"

[architecture]
name = "mlp"

[dataset]
name = "digits"

[space]
hidden = [64, 128, 256]
depth = [1, 2, 3]
dropout = {{ low = 0.0, high = 0.3 }}
activation = ["gelu", "relu"]
lr = {{ low = 1e-3, high = 1e-2, log = true }}
weight_decay = {{ low = 1e-4, high = 0.1, log = true }}
batch_size = [32, 64, 128]
epochs = {epochs}

[strategy]
name = "tpe"

[resources]
cpus_per_trial = 1
"""


def loadavg() -> float:
    return os.getloadavg()[0]


def timestamp(text: str) -> float:
    """A store timestamp (UTC, maybe without its zone) as seconds since the epoch."""
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def store_trials(db: Path) -> list[tuple[float, float]]:
    """(start, end) of every complete trial in a store, in seconds since the epoch."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT started_at, ended_at FROM trials WHERE upper(state) = 'COMPLETE'"
        ).fetchall()
    return [(timestamp(a), timestamp(b)) for a, b in rows]


def run_tree(command: list[str], cwd: Path) -> tuple[float, float, float, list]:
    """Run ``command``; returns (wall s, start and end time, CPU samples of its process tree).

    The CPU seconds of every process under it (Ray's services and workers included) are
    sampled every 0.1 s, as (time, CPU s so far) pairs: a process's last 0.1 s can be
    missed, a busy machine's time is not counted (unlike wall time, CPU seconds hardly
    depend on the load)."""
    import psutil

    cpu: dict[int, float] = {}
    samples: list[tuple[float, float]] = []
    begin = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        for p in [root, *root.children(recursive=True)]:
            try:
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
            except psutil.Error:
                pass
        samples.append((time.time(), sum(cpu.values())))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    end = time.time()
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])}: exit {proc.returncode}\n{stderr[-3000:]}")
    return wall, begin, end, samples + [(end, sum(cpu.values()))]


def timing(
    name: str, wall: float, begin: float, end: float, trials: list, samples: list | None
) -> dict[str, Any]:
    """A run's numbers from its process times, its trials' (start, end) times and its
    process tree's CPU samples (None: its CPU is not the command's)."""
    first = min(start for start, _ in trials)
    last = max(stop for _, stop in trials)
    durations = sorted(stop - start for start, stop in trials)
    return {
        "name": name,
        "wall_s": round(wall, 2),
        "trials": len(trials),
        "to_first_trial_s": round(first - begin, 2),
        "after_last_trial_s": round(end - last, 2),
        "fixed_s": round(first - begin + end - last, 2),
        "span_s": round(last - first, 2),
        "median_trial_s": round(durations[len(durations) // 2], 3),
        "load": round(loadavg(), 2),
        "cpu_s": None if samples is None else round(samples[-1][1], 1),
        # CPU spent before the first trial: over the machine's cores, the start's floor
        "cpu_to_first_s": None
        if samples is None
        else round(max([c for t, c in samples if t <= first], default=0.0), 1),
    }


def run_platform(name: str, config: Path, work: Path, address: str | None) -> dict[str, Any]:
    """One `platform search` process on a fresh SQLite store."""
    db = work / f"{name.replace(' ', '-')}-{time.time_ns()}.db"
    command = [str(BIN / "platform"), "search", str(config), "--storage", f"sqlite:///{db}"]
    if address:
        command += ["--address", address]
    wall, begin, end, samples = run_tree(command, work)
    # a joined Ray's processes (its workers, which run the trials) are not the command's
    return timing(name, wall, begin, end, store_trials(db), None if address else samples)


def run_optuna(name: str, config: Path, work: Path, n_jobs: int) -> dict[str, Any]:
    """One process running the Optuna study (``--optuna-child``)."""
    out = work / f"optuna-{n_jobs}-{time.time_ns()}.json"
    command = [sys.executable, str(HERE), "--optuna-child", str(config), str(n_jobs), str(out)]
    wall, begin, end, samples = run_tree(command, work)
    trials = [tuple(t) for t in json.loads(out.read_text())["trials"]]
    return timing(name, wall, begin, end, trials, samples)


def suggest(trial: Any, key: str, dist: Any) -> Any:
    """``trial.suggest_*`` for one of the space's Optuna distributions."""
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)


def optuna_child(config: str, n_jobs: int, out: str) -> None:
    """The Optuna reference: TPE as autoplat's `tpe` configures it, each trial built and
    trained exactly as platform's worker does (``run_trial``), trials on ``n_jobs`` threads."""
    import warnings

    import optuna
    import torch

    from autoplat.core.config import load_config
    from autoplat.core.registry import get_registry
    from autoplat.core.study import trial_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    resolved = load_config(config, get_registry())
    seed = resolved.config.study.seed
    arch, dataset = resolved.architecture, resolved.dataset
    splits = dataset.load(resolved.dataset_options, seed)
    dists = resolved.space.to_optuna()
    fixed = resolved.space.fixed()
    options = resolved.config.strategy
    torch.set_num_threads(1)  # as each platform trial (cpus_per_trial = 1)

    def objective(trial: optuna.Trial) -> float:
        params = {**{k: suggest(trial, k, d) for k, d in dists.items()}, **fixed}
        arch_params, hyper = arch.split_params(params)
        trial_rng = trial_seed(seed, params)
        torch.manual_seed(trial_rng)
        model = arch.build(arch_params, splits.spec)
        last: dict[str, float] = {}
        arch.train(model, splits, hyper, lambda step, metrics: last.update(metrics), trial_rng)
        return last[resolved.config.study.metric]

    sampler = optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=getattr(options, "n_startup_trials", 10),
        multivariate=getattr(options, "multivariate", True),
    )
    study = optuna.create_study(direction=resolved.direction, sampler=sampler)
    study.optimize(objective, n_trials=resolved.config.study.trials, n_jobs=n_jobs)
    trials = [
        (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    Path(out).write_text(json.dumps({"trials": trials}))


def measure(args: argparse.Namespace, work: Path, say) -> tuple[list[dict[str, Any]], int]:
    """Every row ``args.repeats`` times, interleaved; returns the best run of each."""
    config = work / "short.toml"
    config.write_text(CONFIG.format(trials=args.trials, epochs=args.epochs))
    concurrency = max(1, len(os.sched_getaffinity(0)))  # 1 CPU per trial
    address = None
    if not args.no_running_ray:
        import ray

        from autoplat.core.runner import ensure_ray

        ensure_ray("local")
        address = ray.get_runtime_context().gcs_address
    rows: list[tuple[str, Any]] = [
        ("platform search", lambda: run_platform("platform search", config, work, None)),
        (
            f"optuna, n_jobs={concurrency}",
            lambda: run_optuna(f"optuna, n_jobs={concurrency}", config, work, concurrency),
        ),
        ("optuna, sequential", lambda: run_optuna("optuna, sequential", config, work, 1)),
    ]
    if address:
        rows.insert(
            1,
            (
                "platform search --address",
                lambda: run_platform("platform search --address", config, work, address),
            ),
        )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in rows}
    for repeat in range(args.repeats):
        for name, run in rows:
            before = loadavg()
            row = run()
            row["load_before"] = round(before, 2)
            runs[name].append(row)
            say(
                f"  {name:28s} run {repeat + 1}: {row['wall_s']:6.1f} s wall, "
                f"{row['cpu_s'] or 0:5.1f} CPU s, fixed {row['fixed_s']:.1f} s, load {before:.1f}"
            )
    best = []
    for name, _ in rows:
        top = min(runs[name], key=lambda r: r["wall_s"])
        cpus = [r["cpu_s"] for r in runs[name] if r["cpu_s"] is not None]
        best.append(
            {
                **top,
                "runs_s": [r["wall_s"] for r in runs[name]],
                "cpu_runs_s": cpus,
                "min_cpu_s": min(cpus) if cpus else None,
            }
        )
    return best, concurrency


def summary(rows: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    by = {row["name"]: row for row in rows}
    platform, optuna = by["platform search"], by[f"optuna, n_jobs={concurrency}"]
    sequential = by["optuna, sequential"]
    out: dict[str, Any] = {
        "platform_vs_optuna": round(platform["wall_s"] / optuna["wall_s"], 3),
        "platform_vs_optuna_cpu": round(platform["min_cpu_s"] / optuna["min_cpu_s"], 3),
        "platform_vs_optuna_sequential": round(platform["wall_s"] / sequential["wall_s"], 3),
        "platform_fixed_s": platform["fixed_s"],
    }
    lines = [
        f"platform search / optuna n_jobs={concurrency} = {out['platform_vs_optuna']:.2f}x "
        f"(target <= {TARGET_RATIO}x): "
        + ("PASS" if out["platform_vs_optuna"] <= TARGET_RATIO else "FAIL"),
        f"platform search / optuna sequential = {out['platform_vs_optuna_sequential']:.2f}x",
        f"CPU seconds (all processes): platform search {platform['min_cpu_s']:.1f} / optuna "
        f"n_jobs={concurrency} {optuna['min_cpu_s']:.1f} = {out['platform_vs_optuna_cpu']:.2f}x",
        f"platform fixed cost {platform['fixed_s']:.1f} s ({platform['to_first_trial_s']:.1f} s "
        f"to the first trial, {platform['after_last_trial_s']:.1f} s after the last; target <= "
        f"{TARGET_FIXED_S:.0f} s idle): "
        + ("PASS" if platform["fixed_s"] <= TARGET_FIXED_S else "FAIL"),
    ]
    cores = len(os.sched_getaffinity(0))
    lines.append(
        f"CPU seconds before the first trial: platform search {platform['cpu_to_first_s']:.1f}"
        f" (at best {platform['cpu_to_first_s'] / cores:.1f} s on {cores} CPUs), optuna "
        f"n_jobs={concurrency} {optuna['cpu_to_first_s']:.1f}"
    )
    warm = by.get("platform search --address")
    if warm:
        out["running_ray_vs_optuna"] = round(warm["wall_s"] / optuna["wall_s"], 3)
        out["running_ray_fixed_s"] = warm["fixed_s"]
        lines.append(
            f"platform search --address (Ray already running) / optuna n_jobs={concurrency} = "
            f"{out['running_ray_vs_optuna']:.2f}x, fixed cost {warm['fixed_s']:.1f} s"
        )
    out["lines"] = lines
    return out


def print_table(rows: list[dict[str, Any]], concurrency: int, repeats: int) -> None:
    from rich.console import Console
    from rich.table import Table

    reference = next(r for r in rows if r["name"] == f"optuna, n_jobs={concurrency}")
    table = Table(
        title=f"A short study, whole process (best of {repeats})",
        caption="fixed = to first trial + after last trial; span = first trial start to last "
        "trial end; ratio = wall / optuna n_jobs's; CPU s: of the process tree (least of the "
        "runs; none for --address, whose trials run in the joined Ray's processes); CPU to 1st:"
        " the process tree's CPU s before the first trial (the best run's)",
    )
    columns = (
        "row",
        "wall s",
        "ratio",
        "CPU s",
        "CPU to 1st",
        "to 1st",
        "after last",
        "fixed",
        "span",
        "trial s",
    )
    for column in (*columns, "load", "runs s"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['wall_s']:.1f}",
            f"{row['wall_s'] / reference['wall_s']:.2f}x",
            "" if row["min_cpu_s"] is None else f"{row['min_cpu_s']:.1f}",
            "" if row["cpu_to_first_s"] is None else f"{row['cpu_to_first_s']:.1f}",
            f"{row['to_first_trial_s']:.1f}",
            f"{row['after_last_trial_s']:.1f}",
            f"{row['fixed_s']:.1f}",
            f"{row['span_s']:.1f}",
            f"{row['median_trial_s']:.2f}",
            f"{row['load_before']:.1f}",
            " ".join(f"{s:.1f}" for s in row["runs_s"]),
        )
    console = Console(width=None if sys.stdout.isatty() else 130)
    console.print(table)
    for line in summary(rows, concurrency)["lines"]:
        console.print(line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--optuna-child":
        optuna_child(argv[1], int(argv[2]), argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 trials, 1 repeat")
    parser.add_argument("--trials", type=int, help="trials per study (default 50; quick 10)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    parser.add_argument("--repeats", type=int, help="runs of each row (default 2; quick 1)")
    parser.add_argument(
        "--no-running-ray", action="store_true", help="leave out the row that joins a running Ray"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    args.trials = args.trials or (10 if args.quick else 50)
    args.repeats = args.repeats or (1 if args.quick else 2)
    os.environ.setdefault("AUTOPLAT_BUILTIN_ONLY", "1")  # measure the core, not plugins

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    load = [loadavg()]
    with tempfile.TemporaryDirectory(prefix="autoplat-short-") as scratch:
        try:
            rows, concurrency = measure(args, Path(scratch), say)
        finally:
            if not args.no_running_ray:
                from autoplat.core.runner import shutdown_ray

                shutdown_ray()
    load.append(loadavg())
    print_table(rows, concurrency, args.repeats)
    print(
        f"load average (1 min) {load[0]:.1f} at start, {load[1]:.1f} at end, on "
        f"{os.cpu_count()} CPUs: a busy machine inflates every row"
    )
    if args.json:
        import optuna
        import ray

        payload = {
            "benchmark": "short_study",
            "trials": args.trials,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "concurrency": concurrency,
            "statistic": "best (lowest) wall time of the runs",
            "targets": {"ratio": TARGET_RATIO, "fixed_s": TARGET_FIXED_S},
            "load_average_start_end": [round(x, 2) for x in load],
            "ray": ray.__version__,
            "optuna": optuna.__version__,
            "summary": {k: v for k, v in summary(rows, concurrency).items() if k != "lines"},
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
