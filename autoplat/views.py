"""The tables the CLI prints and the TUI shows (rich renderables from store summaries):
one place, so `platform show` and the TUI agree."""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text


def fmt(value: Any) -> str:
    """A parameter value, floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def varying_keys(params: list[dict[str, Any]]) -> list[str]:
    """Keys whose value differs between trials (all keys when there is one trial)."""
    keys = list(dict.fromkeys(k for p in params for k in p))
    if len(params) < 2:
        return keys
    return [k for k in keys if len({json.dumps(p.get(k)) for p in params}) > 1]


def leaderboard(summary: dict[str, Any], top: int | None = None) -> Table:
    """Completed trials ranked by value; the best also shows the metric on the test split.
    A study with a ``[baseline]`` (``summary["study"]["baseline"]``) gets its row last and
    the best trial's margin over it as the caption."""
    study = summary["study"]
    metric = study["metric"]
    done = [t for t in summary["trials"] if t["state"] == "complete" and t["value"] is not None]
    done.sort(key=lambda t: t["value"], reverse=study["direction"] == "maximize")
    varying = varying_keys([t["params"] for t in summary["trials"]])
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
            params_text({k: t["params"][k] for k in varying if k in t["params"]}),
            f"{t['value']:.4f}",
            f"{test:.4f}" if test is not None else "",
            duration,
        )
    baseline = study.get("baseline")
    if baseline:
        add_baseline(table, baseline, done, metric, test_metric, study["direction"])
    return table


def add_baseline(
    table: Table,
    baseline: dict[str, Any],
    ranked: list[dict[str, Any]],
    metric: str,
    test_metric: str,
    direction: str,
) -> None:
    """The ``[baseline]`` row (model, options, its scores, fit time) and, as the caption,
    the best trial's margin over it and how many trials beat it."""
    scores = [baseline.get(name) for name in (metric, test_metric)]
    if table.rows:
        table.rows[-1].end_section = True  # a line between the trials and the baseline
    table.add_row(
        "",
        Text("[baseline]"),  # not markup
        params_text({"model": baseline["model"], **baseline.get("options", {})}),
        *(f"{v:.4f}" if v is not None else "" for v in scores),
        f"{baseline['fit_s']:.1f}s",
        style="italic",
    )
    if not ranked:
        return
    best = ranked[0]
    values = (best["value"], best["metrics"].get(test_metric))
    sign = 1 if direction == "maximize" else -1
    margins = [
        f"{sign * (ours - theirs):+.4f} {name}"
        for name, ours, theirs in zip((metric, test_metric), values, scores, strict=True)
        if ours is not None and theirs is not None
    ]
    if scores[0] is not None:
        beat = sum(sign * (t["value"] - scores[0]) > 0 for t in ranked)
        margins.append(f"{beat} of {len(ranked)} trials beat it on {metric}")
    if margins:
        table.caption = f"best trial {best['number']} vs baseline: " + ", ".join(margins)


def pareto_table(summary: dict[str, Any]) -> Table:
    """The trials on the Pareto front of a multi-objective study, by its first objective."""
    objectives = summary["study"]["objectives"]
    by_number = {t["number"]: t for t in summary["trials"]}
    front = [by_number[n] for n in summary["pareto_front"]]
    varying = varying_keys([t["params"] for t in summary["trials"]])
    table = Table(
        title=f"Pareto front ({len(front)} trials): "
        + ", ".join(f"{name} ({direction})" for name, direction in objectives.items())
    )
    for column in ("trial", "params", *objectives):
        table.add_column(column, overflow="fold")
    for t in front:
        params = params_text({k: t["params"][k] for k in varying if k in t["params"]})
        values = [f"{t['metrics'][name]:.6g}" for name in objectives]
        table.add_row(str(t["number"]), params, *values)
    return table


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
            params_text(dict(list(headline.items())[:6])),
        )
    if totals:
        n, kept = totals["records"], totals["kept"]
        table.add_row("all", str(kept), str(n), f"{100 * kept / n:.1f}" if n else "", "")
    if artifacts:
        table.caption = " · ".join(f"{k}: {v}" for k, v in artifacts.items())
    return table


def al_table(study_name: str, metric: str, curves: dict[str, Any]) -> Table:
    """Learning curves (mean over seeds at up to four label counts) and AULC (± std) per
    acquisition, with its ratio to random's."""
    counts = sorted({n for c in curves.values() for n in c["labels"]})
    every = max(1, -(-(len(counts) - 1) // 3))  # at most 4 label columns: 80 characters
    shown = [*counts[:-1:every], counts[-1]] if counts else []
    table = Table(
        title=f"'{study_name}': {metric} by labels (mean over seeds)",
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
    return table


def runs_table(summaries: list[dict[str, Any]], where: str) -> Table:
    """`platform runs`: one row per study (its summary plus ``best``)."""
    table = Table(title=f"studies in {where}")
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
    return table
