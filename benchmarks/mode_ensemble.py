"""MoDE's ensemble against the uniform ensemble and the best single expert, on a pool
with real sub-populations, end to end through the commands a user runs.

For each seed: write ``--n`` (1,500) captioned shapes from three sources (photo, sketch, painting;
each its own look, caption style and shapes: ``autoplat.plugins.datasets.shape_sources``),
then ``platform curate`` (examples/mode_experts_sources_curate.toml: balanced two-level
k-means, 32 fine clusters, 3 experts), ``platform search``
(examples/mode_experts_sources.toml: one small CLIP per expert, ``--epochs``) and ``platform experts
--json`` on each task: its classes' test images, zero-shot. The same clusters are also
weighted with the project's earlier rule (a second curate with ``weighting =
"coarse-softmax"``). CPU only, about 4 minutes a seed on 2 cores. Usage::

    python benchmarks/mode_ensemble.py --seeds 0 1 2 [--n 1500 --epochs 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {  # name: classes (the first three: one source's own shapes)
    "photo": "circle,square",
    "sketch": "triangle,diamond",
    "painting": "cross,square",
    "all 5": "circle,square,triangle,diamond,cross",
}
PLATFORM = str(Path(sys.executable).with_name("platform"))


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-2000:]}")
    return done.stdout


def configs(work: Path, seed: int, table: Path, epochs: int) -> tuple[Path, Path, Path]:
    """The example configs with this seed's table, output folder and study names."""
    curate = (ROOT / "examples/mode_experts_sources_curate.toml").read_text()
    search = (ROOT / "examples/mode_experts_sources.toml").read_text()
    out = work / f"curate-{seed}"
    subs = {
        "examples/data/shape_sources/captions.csv": str(table),
        "runs/curate/mode-sources": str(out),
        "seed = 0": f"seed = {seed}",
        "epochs = 20": f"epochs = {epochs}",
    }
    for old, new in subs.items():
        curate, search = curate.replace(old, new), search.replace(old, new)
    old_rule = curate.replace('weighting = "paper"', 'weighting = "coarse-softmax"')
    old_rule = old_rule.replace(str(out), str(out) + "-old").replace(
        'name = "mode-sources-captions"', 'name = "mode-sources-captions-old"'
    )
    paths = (work / f"curate-{seed}.toml", work / f"curate-old-{seed}.toml", work / "search.toml")
    for path, text in zip(paths, (curate, old_rule, search), strict=True):
        path.write_text(text)
    return paths


def one_seed(work: Path, seed: int, n: int, epochs: int) -> list[dict]:
    from autoplat.plugins.datasets.shapes import write_caption_table

    work = work / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    table = write_caption_table(work / "data", n, seed=seed, sources=True)
    curate, old, search = configs(work, seed, table, epochs)
    url = f"sqlite:///{work / 'mode.db'}"
    for config in (curate, old, search):
        run(PLATFORM, "curate" if config != search else "search", str(config), "--storage", url)
    rows = []
    for task, classes in TASKS.items():
        reports = [
            json.loads(
                run(
                    PLATFORM,
                    "experts",
                    "mode-sources",
                    "--curation",
                    curation,
                    "--classes",
                    classes,
                    "--storage",
                    url,
                    "--json",
                )
            )  # fmt: skip
            for curation in ("mode-sources-captions", "mode-sources-captions-old")
        ]
        paper, coarse = reports
        rows.append(
            {
                "seed": seed,
                "task": task,
                "images": paper["test_images"],
                "mode_paper": paper["weighted_accuracy"],
                "coarse_softmax": coarse["weighted_accuracy"],
                "uniform": paper["uniform_accuracy"],
                "best_expert": paper["best_expert_accuracy"],
                "experts": [round(e["accuracy"], 3) for e in paper["experts"]],
                "paper_weights": [round(e["weight"], 3) for e in paper["experts"]],
                "coarse_weights": [round(e["weight"], 3) for e in coarse["experts"]],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    keys = ("mode_paper", "coarse_softmax", "uniform", "best_expert")
    lines = [
        "| seed | task | test images | MoDE (paper) | coarse-softmax | uniform | best expert |"
        " paper weights |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k in keys)
        lines.append(f"| {r['seed']} | {r['task']} | {r['images']} | {cells} | "
                     f"{r['paper_weights']} |")  # fmt: skip
    for task in TASKS:
        mine = [r for r in rows if r["task"] == task]
        means = " | ".join(f"{sum(r[k] for r in mine) / len(mine):.3f}" for k in keys)
        lines.append(f"| mean | {task} | | {means} | |")
    wins = {k: sum(r["mode_paper"] > r[k] for r in rows) for k in keys[1:]}
    ties = {k: sum(r["mode_paper"] == r[k] for r in rows) for k in keys[1:]}
    lines.append(
        f"\nMoDE (paper) wins/ties of {len(rows)}: "
        + ", ".join(f"vs {k} {wins[k]}/{ties[k]}" for k in keys[1:])
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "runs/bench-mode")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--n", type=int, default=1500, help="images in the pool")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per expert")
    args = parser.parse_args()
    work = args.work.resolve()
    rows = [row for seed in args.seeds for row in one_seed(work, seed, args.n, args.epochs)]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
