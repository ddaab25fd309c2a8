"""Per-trial overhead of `platform` on Ray, against Ray Tune run with platform's settings
and a plain Optuna loop.

Every variant runs trials of a trainable that does nothing (it reports one deterministic
number and returns), so what is measured is the cost of running a trial, not the trial.
Rows:

- ``optuna loop``: ``study.optimize`` with a no-op objective over the same space: the floor.
- ``tune, platform's settings``: ``tune.Tuner`` with what platform sets (actor reuse,
  concurrency = CPUs, no result loggers): the reference every ratio is taken against.
- ``platform on Ray``: ``run_study`` of a random search, storing every event in SQLite.
  Target: at most 1.1x the reference per trial.
- ``plain Ray Tune``: ``tune.Tuner`` with Ray's defaults (a new process per trial): a weak
  reference, kept to show what actor reuse is worth.
- whole-study rows: ``platform, whole study`` and ``tune, platform's settings, whole
  study`` each start their own local Ray (``ensure_ray``), run and shut it down, all timed:
  what a study costs against ``optuna loop``.
- knob rows: the same runs with one Ray setting changed, to show which settings matter for
  short trials (see benchmarks/README.md for what each one does).

Rows other than whole-study ones share one Ray session, started once and warmed up first.

Each headline row runs ``--repeats`` times (knob rows once unless ``--repeats`` is given),
interleaved, and the table shows the best (lowest) total: the noise of a busy machine only
ever adds time. Usage::

    python benchmarks/overhead.py            # full run: 64 trials, a few minutes
    python benchmarks/overhead.py --quick    # 8 trials, headline rows only, < 1 minute
    python benchmarks/overhead.py --json overhead.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import textwrap
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("AUTOPLAT_BUILTIN_ONLY", "1")  # measure the core, not installed plugins

TARGET = 1.1  # platform on Ray may take at most this many times Tune with its settings
REFERENCE = "tune, platform's settings"  # every ratio's denominator (whole rows: its whole row)
SLOW_TRIAL_S = 1.0  # a variant whose first run took this long per trial runs only once
METRIC = "val_accuracy"
FITS = -1  # max_concurrent: as many 1-CPU trials as the cluster has CPUs (platform's default)
TWICE = -2  # max_concurrent: twice that
RAY_SERVICES = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")  # not trial actors

CONFIG = """
[study]
name = "{name}"
trials = {trials}
seed = 0

[architecture]
name = "vit"

[dataset]
name = "digits"

[space]
depth = [1, 2]
width = [16, 32]
heads = [2]
mlp_ratio = [2]
patch_size = [4]
dropout = 0.0
lr = {{ low = 1e-4, high = 1e-2, log = true }}
batch_size = 128
epochs = {epochs}

[strategy]
name = "random"

[resources]
cpus_per_trial = 1
{max_concurrent}
"""


@dataclass(frozen=True)
class Variant:
    """One way of running the trials.

    Attributes:
        name: The row label.
        kind: ``optuna``, ``store``, ``tune`` (plain Ray Tune) or ``platform``.
        whole: The run starts its own local Ray and shuts it down, all timed (the row runs
            after the shared Ray session is shut down).
        env: Environment for the run; ``None`` unsets a variable. Plain Ray Tune rows start
            from Ray's defaults (autoplat's ``RAY_ENV_DEFAULTS`` unset), platform rows from
            autoplat's.
        reuse_actors: ``TuneConfig.reuse_actors``; ``None`` keeps the default (Ray's for
            plain Tune, the driver's for platform, where other values are patched in).
        max_concurrent: ``max_concurrent_trials``; platform rows set ``[resources]``.
        reports: Reports per trial (``epochs``); the last carries ``finished: 1``.
        work_s: Seconds each trial sleeps (spread over its reports): a short real trial.
        share: Fraction of the trial count to run (slow rows run fewer; per-trial numbers
            stay comparable since the fixed cost of a study is small next to them).
        knob: A knob row (left out by ``--quick``).
        note: What the row changes, in a few words.
    """

    name: str
    kind: str
    env: dict[str, str | None] = field(default_factory=dict)
    reuse_actors: bool | None = None
    max_concurrent: int | None = None
    reports: int = 1
    work_s: float = 0.0
    whole: bool = False
    share: float = 1.0
    knob: bool = False
    note: str = ""


def variants() -> list[Variant]:
    """Every row: the headline ones first, then one knob changed at a time."""
    quiet = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    same = {"env": quiet, "reuse_actors": True, "max_concurrent": FITS}  # platform's settings
    return [
        Variant("optuna loop", "optuna", note="study.optimize, no-op objective: the floor"),
        Variant(
            REFERENCE,
            "tune",
            **same,
            note="reuse, concurrency = CPUs, no loggers: platform minus searcher and store",
        ),
        Variant("platform on Ray", "platform", note="run_study + SQLite store, its defaults"),
        Variant(
            f"{REFERENCE}, whole study",
            "tune",
            **same,
            whole=True,
            note="ensure_ray + Tuner.fit + shutdown_ray",
        ),
        Variant(
            "platform, whole study",
            "platform",
            whole=True,
            note="ensure_ray + run_study + shutdown_ray",
        ),
        Variant(
            "plain Ray Tune",
            "tune",
            share=0.25,
            knob=True,
            note="tune.Tuner with Ray's defaults (a process per trial): a weak reference",
        ),
        # -- what the platform row is made of
        Variant(
            "platform on Ray, 1/4 the trials",
            "platform",
            share=0.25,
            knob=True,
            note="with the full row: a study's fixed cost and the marginal cost of a trial",
        ),
        Variant("store writes only", "store", knob=True, note="the SQLite writes, no Ray"),
        # -- actor reuse
        Variant(
            "tune reuse_actors=True",
            "tune",
            reuse_actors=True,
            knob=True,
            note="Ray's defaults otherwise",
        ),
        Variant(
            "platform reuse_actors=False",
            "platform",
            reuse_actors=False,
            share=0.125,
            knob=True,
            note="a new actor (process) per trial",
        ),
        # -- result loggers
        Variant(
            "platform + loggers",
            "platform",
            knob=True,
            env={"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"},
            note="CSV/JSON/TensorBoard files per trial back on",
        ),
        # -- concurrency (TUNE_MAX_PENDING_TRIALS_PG is no knob here: with max_concurrent_trials
        # set, Tune wraps the searcher in a ConcurrencyLimiter and already caps pending trials)
        Variant(
            "platform max_concurrent=1",
            "platform",
            max_concurrent=1,
            knob=True,
            note="one trial at a time",
        ),
        Variant(
            "platform max_concurrent=2xCPUs",
            "platform",
            max_concurrent=TWICE,
            knob=True,
            note="twice what fits: half the trials wait for a CPU",
        ),
        # -- result buffering (only matters when a trial reports often)
        Variant(
            "platform, 8 reports/trial",
            "platform",
            reports=8,
            knob=True,
            note="8 epochs of nothing: 8 results through the store",
        ),
        Variant(
            "platform, 8 reports, buffer=8",
            "platform",
            reports=8,
            knob=True,
            env={"TUNE_RESULT_BUFFER_LENGTH": "8"},
            note="TUNE_RESULT_BUFFER_LENGTH=8: results fetched in batches",
        ),
        # -- concurrency when trials do take time
        Variant(
            "platform, 0.5 s trials",
            "platform",
            work_s=0.5,
            share=0.25,
            knob=True,
            note="each trial sleeps 0.5 s; 2 at a time (what fits: the default)",
        ),
        Variant(
            "platform, 0.5 s, max_concurrent=1",
            "platform",
            work_s=0.5,
            max_concurrent=1,
            share=0.25,
            knob=True,
            note="each trial sleeps 0.5 s; one at a time",
        ),
    ]


# -- trainables ------------------------------------------------------------------------


def make_noop(reports: int, pid_log: str, work_s: float = 0.0) -> Callable[..., None]:
    """A trainable that reports a number derived from its config and returns.

    With ``work_s`` it sleeps that long in all, in equal parts before each report.

    It appends its process id to ``pid_log`` so the benchmark can count actor processes.
    Defined in a closure so Ray pickles it by value: workers need not import this file.
    """

    def noop(config: dict[str, Any], job: Any = None) -> None:
        import os
        import time

        from ray import tune

        with open(pid_log, "a") as f:
            f.write(f"{os.getpid()}\n")
        value = zlib.crc32(json.dumps(config, sort_keys=True).encode()) % 1000 / 1000
        for step in range(1, reports + 1):
            if work_s:
                time.sleep(work_s / reports)
            extra = {"finished": 1} if step == reports else {}
            tune.report({METRIC: value, "epoch": step, **extra})

    return noop


# -- environment and patches -----------------------------------------------------------


@contextlib.contextmanager
def environ(overrides: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, unset) variables; restore the whole environment after.

    Tune reads its variables when a run starts (and may rewrite some), so setting them around
    each run is enough; nothing is read at import time.
    """
    saved = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def driver_reuse(reuse_actors: bool | None) -> Iterator[None]:
    """Make ``run_study`` build its TuneConfig with another ``reuse_actors`` (knob rows)."""
    if reuse_actors is None:
        yield
        return
    import ray.tune

    real = ray.tune.TuneConfig

    def patched(**kwargs: Any) -> Any:
        return real(**{**kwargs, "reuse_actors": reuse_actors})

    ray.tune.TuneConfig = patched
    try:
        yield
    finally:
        ray.tune.TuneConfig = real


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Swallow what plain Ray Tune prints by default (its progress tables)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def concurrency(variant: Variant) -> int | None:
    """The row's ``max_concurrent_trials``, with FITS and TWICE resolved on the cluster."""
    if variant.max_concurrent not in (FITS, TWICE):
        return variant.max_concurrent
    import ray

    fits = max(1, int(ray.cluster_resources().get("CPU", 1)))  # 1 CPU per trial
    return fits if variant.max_concurrent == FITS else 2 * fits


# -- runners ---------------------------------------------------------------------------


class Bench:
    """Runs variants in one Ray session, in a scratch directory."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.count = 0

    def _next(self, stem: str) -> str:
        self.count += 1
        return f"{re.sub(r'[^A-Za-z0-9]+', '-', stem).strip('-')}-{self.count}"

    def config(self, name: str, trials: int, reports: int, max_concurrent: int | None):
        from autoplat.core.config import load_config
        from autoplat.core.registry import get_registry

        path = self.dir / f"{name}.toml"
        limit = f"max_concurrent = {max_concurrent}" if max_concurrent else ""
        body = CONFIG.format(name=name, trials=trials, epochs=reports, max_concurrent=limit)
        path.write_text(textwrap.dedent(body))
        return load_config(path, get_registry())

    def run(self, variant: Variant, trials: int) -> tuple[float, int]:
        """Run one variant; returns (seconds, actor processes used). A whole-study variant
        starts a local Ray first and shuts it down after, both timed."""
        from autoplat.core.runner import ensure_ray, shutdown_ray

        name = self._next(variant.name)
        pid_log = self.dir / f"{name}.pids"
        pid_log.touch()
        noop = make_noop(variant.reports, str(pid_log), variant.work_s)
        runner = getattr(self, f"_{variant.kind}")
        start = time.perf_counter()
        if variant.whole:
            ensure_ray("local")
        try:
            seconds = runner(variant, trials, name, noop)
        finally:
            if variant.whole:
                shutdown_ray()
        if variant.whole:
            seconds = time.perf_counter() - start
        actors = len(set(pid_log.read_text().split()))
        return seconds, actors

    def _platform(self, variant: Variant, trials: int, name: str, noop) -> float:
        from autoplat.core.store import Store, TrialState
        from autoplat.core.study import run_study

        with environ(variant.env), driver_reuse(variant.reuse_actors):
            start = time.perf_counter()
            resolved = self.config(name, trials, variant.reports, concurrency(variant))
            store = Store(f"sqlite:///{self.dir / name}.db")
            study_id = run_study(resolved, store, trainable=noop)
            seconds = time.perf_counter() - start
        done = [t for t in store.trials(study_id) if t.state == TrialState.COMPLETE]
        if len(done) != trials or any(t.value is None for t in done):
            raise RuntimeError(f"{variant.name}: {len(done)}/{trials} trials complete")
        return seconds

    def _tune(self, variant: Variant, trials: int, name: str, noop) -> float:
        from ray import tune

        from autoplat.core.runner import RAY_ENV_DEFAULTS

        space = self.config(name, trials, variant.reports, None).space.to_tune()
        options: dict[str, Any] = {"max_concurrent_trials": concurrency(variant)}
        if variant.reuse_actors is not None:
            options["reuse_actors"] = variant.reuse_actors
        ray_defaults = {key: None for key in RAY_ENV_DEFAULTS}
        with environ({**ray_defaults, **variant.env}), silenced():
            start = time.perf_counter()
            tuner = tune.Tuner(
                noop,
                param_space=space,
                tune_config=tune.TuneConfig(
                    num_samples=trials, metric=METRIC, mode="max", **options
                ),
                # Ray's default storage is ~/ray_results; keep the files in the scratch dir.
                run_config=tune.RunConfig(name=name, storage_path=str(self.dir / "ray")),
            )
            results = tuner.fit()
            seconds = time.perf_counter() - start
        if len(results) != trials or results.errors:
            raise RuntimeError(f"{variant.name}: {len(results.errors)} of {trials} trials failed")
        return seconds

    def _optuna(self, variant: Variant, trials: int, name: str, noop) -> float:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = self.config(name, trials, 1, None).space.to_optuna()

        def suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                return trial.suggest_categorical(key, dist.choices)
            if isinstance(dist, optuna.distributions.IntDistribution):
                return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
            return trial.suggest_float(key, dist.low, dist.high, log=dist.log)

        def objective(trial: optuna.Trial) -> float:
            params = {key: suggest(trial, key, dist) for key, dist in dists.items()}
            return zlib.crc32(json.dumps(params, sort_keys=True).encode()) % 1000 / 1000

        start = time.perf_counter()
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
        )
        study.optimize(objective, n_trials=trials)
        seconds = time.perf_counter() - start
        if len(study.trials) != trials:
            raise RuntimeError(f"optuna ran {len(study.trials)} of {trials} trials")
        return seconds

    def _store(self, variant: Variant, trials: int, name: str, noop) -> float:
        """The store calls the driver's callback makes for a one-report trial, in a loop."""
        from autoplat.core.store import Store, TrialState

        resolved = self.config(name, trials, 1, None)
        params = resolved.space.fixed()
        start = time.perf_counter()
        store = Store(f"sqlite:///{self.dir / name}.db")
        study = store.create_study(name, kind="search", direction="maximize", metric=METRIC)
        for number in range(trials):
            row = store.start_trial(study.id, params, ray_trial_id=f"t{number}")
            store.add_metrics(row.id, 1, {METRIC: 0.5, "epoch": 1.0})
            store.finish_trial(row.id, TrialState.COMPLETE, value=0.5)
        return time.perf_counter() - start


# -- main ------------------------------------------------------------------------------


def settle(timeout: float = 30.0) -> None:
    """Wait until the previous run's trial actors have exited (a run without actor reuse
    leaves processes dying for a few seconds; the next run should not pay for them)."""
    try:
        import psutil  # ships with Ray
    except ImportError:
        time.sleep(3.0)
        return
    deadline = time.monotonic() + timeout
    me = psutil.Process()
    while time.monotonic() < deadline:
        busy = []
        for proc in me.children(recursive=True):  # our raylet and its workers
            with contextlib.suppress(psutil.Error):
                title = " ".join(proc.cmdline())
                if title.startswith("ray::") and not title.startswith(RAY_SERVICES):
                    busy.append(proc)
        if not busy:
            break
        time.sleep(0.2)
    time.sleep(0.5)


def measure(
    chosen: list[Variant],
    trials: int,
    repeats: int,
    knob_repeats: int,
    workdir: Path,
    say: Callable[[str], None],
    warm_up: tuple[str, ...] = ("tune", "platform"),
) -> list[dict[str, Any]]:
    """Run headline rows ``repeats`` times and knob rows ``knob_repeats`` times, round-robin;
    returns one row per variant."""
    bench = Bench(workdir)
    # Warm up, uncounted: Ray's first trials start worker processes and import Tune.
    start = time.perf_counter()
    for kind in warm_up:
        bench.run(Variant(f"warm-up {kind}", kind, reuse_actors=True), 2)
    if warm_up:
        say(f"warm-up: {time.perf_counter() - start:.1f} s (uncounted)")
    rows = {v.name: {"variant": v, "runs": [], "actors": []} for v in chosen}
    for repeat in range(max(repeats, knob_repeats)):
        for variant in chosen:
            row = rows[variant.name]
            n = max(4, round(trials * variant.share))
            if repeat >= (knob_repeats if variant.knob else repeats):
                continue
            if repeat and row["runs"] and row["runs"][0] / n > SLOW_TRIAL_S:
                continue  # a slow row's noise is small next to it; one run is enough
            if not variant.whole:
                settle()
            seconds, actors = bench.run(variant, n)
            row["runs"].append(seconds)
            row["actors"].append(actors)
            row["trials"] = n
            say(f"  {variant.name:32s} run {repeat + 1}: {seconds:7.2f} s, {n} trials")
    out = []
    for name, row in rows.items():
        variant: Variant = row["variant"]
        best = min(row["runs"])
        out.append(
            {
                "name": name,
                "kind": variant.kind,
                "knob": variant.knob,
                "whole": variant.whole,
                "work_s": variant.work_s,
                "note": variant.note,
                "trials": row["trials"],
                "runs_s": [round(s, 3) for s in row["runs"]],
                "best_s": round(best, 3),
                "per_trial_s": round(best / row["trials"], 5),
                "actors": min(row["actors"]),
            }
        )
    return out


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's seconds per trial over the reference's (``REFERENCE``; a whole-study
    row: over the reference's whole-study row); None for rows whose trials sleep."""
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        reference = by_name.get(f"{REFERENCE}, whole study" if row["whole"] else REFERENCE)
        comparable = reference and not row["work_s"]  # trials that sleep are not overhead
        row["ratio"] = (
            round(row["per_trial_s"] / reference["per_trial_s"], 5) if comparable else None
        )


def print_table(rows: list[dict[str, Any]], repeats: int, knob_repeats: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"Per-trial overhead, no-op trials (best of {repeats} runs, knob rows {knob_repeats})"
        ),
        caption=(
            f"ratio: seconds per trial / {REFERENCE}'s (whole-study rows: its whole-study "
            "row's); actors: worker processes that ran "
            f"trials; a row whose first run took over {SLOW_TRIAL_S:.0f} s a trial runs once"
        ),
    )
    for column in ("variant", "trials", "total s", "s/trial", "ratio", "actors", "runs s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for i, row in enumerate(rows):
        if i and row["knob"] and not rows[i - 1]["knob"]:
            table.add_section()
        ratio = row["ratio"]
        table.add_row(
            row["name"],
            str(row["trials"]),
            f"{row['best_s']:.2f}",
            f"{row['per_trial_s']:.4f}",
            "" if ratio is None else f"{ratio:.3f}x" if ratio >= 0.01 else f"{ratio:.2g}x",
            "" if row["kind"] in ("optuna", "store") else str(row["actors"]),
            " ".join(f"{s:.1f}" for s in row["runs_s"]),
        )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    for line in summary(rows)["lines"]:
        console.print(line)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers: platform against Tune with its settings (the target), the
    Optuna loop and plain Tune; whole studies (Ray's start and stop included) against
    each other and the Optuna loop; platform's fixed and marginal costs. ``lines`` says
    them."""
    by_name = {row["name"]: row for row in rows}
    platform, same = by_name.get("platform on Ray"), by_name.get(REFERENCE)
    optuna, plain = by_name.get("optuna loop"), by_name.get("plain Ray Tune")
    whole, whole_tune = (
        by_name.get("platform, whole study"),
        by_name.get(f"{REFERENCE}, whole study"),
    )
    quarter = by_name.get("platform on Ray, 1/4 the trials")
    out: dict[str, Any] = {"lines": []}

    def per_trial(a: dict[str, Any], b: dict[str, Any]) -> float:
        return round(a["per_trial_s"] / b["per_trial_s"], 3)

    if platform and same:
        ratio = out["platform_vs_tune_same_settings"] = per_trial(platform, same)
        out["target_met"] = ratio <= TARGET
        out["lines"].append(
            f"platform on Ray / {REFERENCE} = {ratio:.3f}x per trial (target <= {TARGET}x): "
            + ("PASS" if ratio <= TARGET else "FAIL")
            + " (what the searcher adapter, store callback and SQLite writes add)"
        )
    if platform and optuna:
        ratio = out["platform_vs_optuna_loop"] = per_trial(platform, optuna)
        out["lines"].append(f"platform on Ray / optuna loop = {ratio:.0f}x per no-op trial")
    if platform and plain:
        ratio = out["platform_vs_plain_tune"] = per_trial(platform, plain)
        out["lines"].append(
            f"platform on Ray / plain Ray Tune (Ray's defaults, weak reference) = {ratio:.3f}x"
        )
    if whole and whole_tune:
        ratio = out["whole_platform_vs_whole_tune"] = round(
            whole["best_s"] / whole_tune["best_s"], 3
        )
        out["lines"].append(
            f"whole study (ray.init to shutdown, {whole['trials']} trials): platform "
            f"{whole['best_s']:.1f} s / {REFERENCE} {whole_tune['best_s']:.1f} s = {ratio:.2f}x"
        )
    if whole and optuna:
        scaled = optuna["per_trial_s"] * whole["trials"]
        ratio = out["whole_platform_vs_optuna_loop"] = round(whole["best_s"] / scaled, 1)
        out["lines"].append(
            f"whole study: platform {whole['best_s']:.1f} s / optuna loop {scaled:.3f} s = "
            f"{ratio:.0f}x (Ray's start and stop dominate a study of no-op trials)"
        )
    if platform and quarter and platform["trials"] > quarter["trials"]:
        marginal = (platform["best_s"] - quarter["best_s"]) / (
            platform["trials"] - quarter["trials"]
        )
        fixed = platform["best_s"] - marginal * platform["trials"]
        out["platform_fixed_s"] = round(fixed, 3)
        out["platform_marginal_s_per_trial"] = round(marginal, 5)
        out["lines"].append(
            f"platform on Ray: about {fixed:.1f} s per study (Tuner and first actors start; "
            f"Ray already running) + {marginal:.4f} s per trial"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 trials, headline rows only")
    parser.add_argument("--trials", type=int, help="trials per variant (default 64; quick 8)")
    parser.add_argument(
        "--repeats", type=int, help="runs per variant (default: 2, knob rows 1; quick 1)"
    )
    parser.add_argument("--only", help="regex: run only the variants whose name matches")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    trials = args.trials or (8 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 2)
    knob_repeats = args.repeats or 1
    chosen = [v for v in variants() if not (args.quick and v.knob)]
    if args.only:
        chosen = [v for v in chosen if re.search(args.only, v.name)]
        if not chosen:
            parser.error(f"--only {args.only!r} matches no variant")
    json_path = args.json.resolve() if args.json else None

    import optuna
    import ray

    from autoplat.core.runner import ensure_ray, shutdown_ray

    warnings.filterwarnings("ignore")
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(
        prefix="autoplat-overhead-", ignore_cleanup_errors=True
    ) as scratch:
        here = Path.cwd()
        os.chdir(scratch)  # run_study writes Ray's experiment state under ./runs/ray
        shared = [v for v in chosen if not v.whole]
        try:
            ray_start = time.perf_counter()
            # "local": a fresh local Ray, never a cluster a `ray start` left recorded in
            # /tmp/ray/ray_current_cluster (plain ray.init() would join it, or hang if dead).
            ensure_ray("local")
            say(f"ray.init: {time.perf_counter() - ray_start:.1f} s (uncounted)")
            warm_up = ("platform",) if args.quick else ("tune", "platform")
            if shared:
                rows = measure(shared, trials, repeats, knob_repeats, Path(scratch), say, warm_up)
            else:
                rows = []
            shutdown_ray()  # whole-study rows start and stop their own
            whole = [v for v in chosen if v.whole]
            if whole:
                rows += measure(whole, trials, repeats, knob_repeats, Path(scratch), say, ())
        finally:
            os.chdir(here)
            shutdown_ray()
    rows.sort(key=lambda row: [v.name for v in chosen].index(row["name"]))
    add_ratios(rows)
    load = (load_before, os.getloadavg()[0])
    print_table(rows, repeats, knob_repeats)
    print(
        f"load average (1 min) {load[0]:.1f} at start, {load[1]:.1f} at end, on {os.cpu_count()} "
        "CPUs: a busy machine inflates every row"
    )
    if json_path:
        payload = {
            "benchmark": "overhead",
            "trials": trials,
            "repeats": repeats,
            "knob_repeats": knob_repeats,
            "statistic": "best (lowest) total of the runs",
            "target_ratio": TARGET,
            "cpus": os.cpu_count(),
            "load_average_start_end": [round(x, 2) for x in load],
            "ray": ray.__version__,
            "optuna": optuna.__version__,
            "python": sys.version.split()[0],
            "wall_s": round(time.perf_counter() - started, 1),
            "summary": {k: v for k, v in summary(rows).items() if k != "lines"},
            "variants": rows,
        }
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
