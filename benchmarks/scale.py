"""How time and peak memory grow with the work, each at three sizes at least, with the
growth exponent (the slope of log CPU time over log size: 1 = linear).

Sections (``--section NAME``, default all):

- ``curate``: ``platform curate`` (a subprocess, as a user runs it) with the ``metaclip``
  scorer (the 500,000 entries of ``build_metadata``, written once as a JSON list) on N
  records made from the 10,000 alt-texts of ``examples/data``: record i is alt-text
  ``i mod 10,000`` with its words rotated by ``i // 10,000`` and the token ``#i``
  appended, so every record is distinct. Chunks of 10,000. Peak memory is the
  subprocess's peak RSS (sampled every 10 ms); it must stay flat as N grows.
- ``al``: one selection round of ``coreset`` (100 labeled), ``badge`` and ``batchbald``
  (20 MC samples, ``num_configs`` 1,000) on a pool of N items (128-d embeddings, 10
  classes), batch 100 (BatchBALD: 10), in process; peak memory above the start (RSS,
  sampled by a thread).
- ``study``: a table-benchmark study of N trials (NAS-Bench-201 cells and accuracies
  from the ``nb201`` table, 2 metrics per trial): the store writes the study's driver
  makes per trial (``start_trial``, ``add_metrics``, ``finish_trial``; SQLite file), then
  ``platform show`` (a subprocess) on it.

Sizes: curate 10,000 / 30,000 / 100,000 records, al 1,000 / 10,000 / 30,000 items, study
300 / 1,000 / 3,000 trials; ``--large`` adds 1,000,000 records, 100,000 items and
10,000 trials (long on 2 busy CPUs). Usage::

    python benchmarks/scale.py                      # default sizes, ~10 minutes on 2 CPUs
    python benchmarks/scale.py --section study --large
    python benchmarks/scale.py --json scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from dedup_speed import PeakRSS  # benchmarks/: the same peak-RSS sampler

ROOT = Path(__file__).resolve().parents[1]
ALT_TEXTS = ROOT / "examples/data/alt_texts_10k.parquet"
PLATFORM = str(Path(sys.executable).with_name("platform"))
SIZES = {
    "curate": ((10_000, 30_000, 100_000), (1_000_000,)),
    "al": ((1_000, 10_000, 30_000), (100_000,)),
    "study": ((300, 1_000, 3_000), (10_000,)),
}


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of a subprocess (output shown on failure).

    The peak is sampled every 10 ms (psutil): ``ru_maxrss`` would count the parent's
    pages the child had between fork and exec.
    """
    import psutil

    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        child, peak, reaped = psutil.Process(proc.pid), 0, []
        waiter = threading.Thread(target=lambda: reaped.append(os.wait4(proc.pid, 0)))
        waiter.start()
        while waiter.is_alive():
            with contextlib.suppress(psutil.Error):  # it may exit between the checks
                peak = max(peak, child.memory_info().rss)
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        _, status, usage = reaped[0]
        if status:
            out.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.read().decode()[-3000:]}")
    proc.returncode = status  # reaped here, not by Popen
    return seconds, usage.ru_utime + usage.ru_stime, peak / 2**20


def slope(sizes: list[int], values: list[float]) -> float:
    """The growth exponent: least-squares slope of log value over log size."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


# -- curate -----------------------------------------------------------------------------
def write_records(path: Path, n: int) -> None:
    """``n`` distinct captions made from the shipped alt-texts (see the docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = [t or "" for t in pq.read_table(ALT_TEXTS, columns=["TEXT"])["TEXT"].to_pylist()]
    words = [t.split() or [""] for t in base]
    with pq.ParquetWriter(path, pa.schema([("TEXT", pa.string())])) as writer:
        for start in range(0, n, 100_000):
            texts = []
            for i in range(start, min(start + 100_000, n)):
                w = words[i % len(words)]
                turn = (i // len(words)) % len(w)
                texts.append(" ".join(w[turn:] + w[:turn]) + f" #{i}")
            writer.write_table(pa.table({"TEXT": texts}))


def curate_section(sizes: list[int], work: Path, log: Callable[[str], None]) -> list[dict]:
    from autoplat.plugins.scorers.metaclip import build_metadata

    entries = work / "entries.json"
    entries.write_text(json.dumps(build_metadata(500_000)))
    rows = []
    for n in sizes:
        data = work / f"records_{n}.parquet"
        write_records(data, n)
        config = work / f"curate_{n}.toml"
        config.write_text(
            f'[study]\nname = "scale-curate-{n}"\nseed = 0\n\n'
            f'[input]\npath = "{data}"\ntext = "TEXT"\nchunk_size = 10000\n\n'
            f'[output]\ndir = "{work / f"out_{n}"}"\n\n'
            f'[scorers.metaclip]\nmetadata = "{entries}"\nt = 100\n'
        )
        log(f"curate: {n:,} records")
        seconds, cpu, peak = run_measured(
            [PLATFORM, "curate", str(config), "--storage", f"sqlite:///{work / 'curate.db'}"],
            ROOT,
        )
        rows.append(
            {
                "what": "platform curate, metaclip",
                "size": n,
                "seconds": seconds,
                "cpu_s": cpu,
                "peak_mb": peak,
            }
        )
        data.unlink()
    return rows


# -- al ---------------------------------------------------------------------------------
def al_section(sizes: list[int], log: Callable[[str], None]) -> list[dict]:
    import torch

    from autoplat.strategies.acquisition.bayesian import BatchBALD
    from autoplat.strategies.acquisition.diversity import CoreSet
    from autoplat.strategies.acquisition.hybrid import BADGE

    rows = []
    for n in sizes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 128, generator=g)
        probs = torch.softmax(torch.randn(n, 10, generator=g) * 2, 1)
        outputs = {
            "embeddings": x,
            "labeled_embeddings": torch.randn(100, 128, generator=g),
            "probs": probs,
            "mc_probs": torch.softmax(torch.randn(20, n, 10, generator=g) * 2, -1),
        }
        for name, acquisition, k in (
            ("coreset", CoreSet(), 100),
            ("badge", BADGE(), 100),
            ("batchbald", BatchBALD(num_configs=1_000), 10),
        ):
            log(f"al: {name}, pool {n:,}")
            with PeakRSS() as rss:
                start, cpu = time.perf_counter(), time.process_time()
                acquisition.select(outputs, k, torch.Generator().manual_seed(0))
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            rows.append(
                {
                    "what": f"{name} round, batch {k}",
                    "size": n,
                    "seconds": seconds,
                    "cpu_s": cpu,
                    "peak_mb": rss.mb,
                }
            )
    return rows


# -- study ------------------------------------------------------------------------------
def study_section(sizes: list[int], work: Path, log: Callable[[str], None]) -> list[dict]:
    from autoplat.core.store import Store, TrialState

    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    rows = []
    for n in sizes:
        url = f"sqlite:///{work / f'study_{n}.db'}"
        store = Store(url)
        name = f"scale-study-{n}"
        study = store.create_study(
            name,
            kind="search",
            direction="maximize",
            metric="val_accuracy",
            target_trials=n,
            config=json.dumps({"study": {"name": name}}),
        )
        rng = np.random.default_rng(0)
        log(f"study: {n:,} trials, store writes")
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            params = {f"edge_{j}": ops[rng.integers(5)] for j in range(6)}
            trial = store.start_trial(study.id, params)
            accuracy = float(rng.uniform(0.1, 0.94))
            store.add_metrics(
                trial.id,
                1,
                {"val_accuracy": accuracy, "simulated_seconds": float(rng.uniform(100, 900))},
            )
            store.finish_trial(trial.id, TrialState.COMPLETE, value=accuracy)
        writes, cpu = time.perf_counter() - start, time.process_time() - cpu
        rows.append(
            {
                "what": "store writes (3 per trial)",
                "size": n,
                "seconds": writes,
                "cpu_s": cpu,
                "peak_mb": float("nan"),
            }
        )
        log(f"study: {n:,} trials, platform show")
        seconds, cpu, peak = run_measured([PLATFORM, "show", name, "--storage", url], ROOT)
        rows.append(
            {"what": "platform show", "size": n, "seconds": seconds, "cpu_s": cpu, "peak_mb": peak}
        )
    return rows


def exponents(rows: list[dict]) -> list[dict]:
    """One line per measured thing: its times and memory by size, and the exponent."""
    out = []
    for what in dict.fromkeys(r["what"] for r in rows):
        mine = [r for r in rows if r["what"] == what]
        sizes = [r["size"] for r in mine]
        times = [r["cpu_s"] for r in mine]
        out.append(
            {
                "what": what,
                "sizes": sizes,
                "seconds": [round(r["seconds"], 3) for r in mine],
                "cpu_s": [round(t, 3) for t in times],
                "peak_mb": [round(r["peak_mb"], 1) for r in mine],
                "time_exponent": round(slope(sizes, times), 2) if len(mine) > 1 else None,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=list(SIZES), action="append", help="only these")
    parser.add_argument("--large", action="store_true", help="add the largest sizes")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    load = [os.getloadavg()[0]]
    results = {}
    print("| section | what | sizes | wall s | CPU s | peak MB | CPU-time exponent |")
    print("|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for section in args.section or list(SIZES):
            small, large = SIZES[section]
            sizes = list(small) + (list(large) if args.large else [])
            if section == "curate":
                rows = curate_section(sizes, work, log)
            elif section == "al":
                rows = al_section(sizes, log)
            else:
                rows = study_section(sizes, work, log)
            results[section] = exponents(rows)
            for r in results[section]:  # each section as soon as it is done
                cells = [
                    section,
                    r["what"],
                    " / ".join(f"{s:,}" for s in r["sizes"]),
                    " / ".join(f"{t:.2f}" for t in r["seconds"]),
                    " / ".join(f"{t:.2f}" for t in r["cpu_s"]),
                    " / ".join(f"{m:.0f}" for m in r["peak_mb"]),
                    str(r["time_exponent"]),
                ]
                print("| " + " | ".join(cells) + " |", flush=True)
    load.append(os.getloadavg()[0])
    print(
        f"\nload average {load[0]:.1f} -> {load[1]:.1f}; exponent: slope of log CPU time over "
        "log size (1 = linear; CPU time, as wall time on a shared machine mostly measures "
        "the load); peak MB: subprocess peak RSS (curate, show), RSS above the start (al)"
    )
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "sections": results}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
