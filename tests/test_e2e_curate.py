"""`platform curate` end to end with each built-in scorer, on the examples' configs (their
input cut to 400 real alt-texts, the hashing embedder for speed), in process."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoplat.cli import main
from autoplat.core.store import Store

ROOT = Path(__file__).parents[1]
ALT_TEXTS = ROOT / "examples" / "data" / "alt_texts_10k.parquet"
N, DUPLICATES = 400, 40  # the first DUPLICATES texts appear twice (rows N..N+DUPLICATES)


def toml_value(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(path: Path, study: dict, sections: dict[str, dict]) -> Path:
    lines = []
    for name, table in {"study": study, **sections}.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """N real alt-texts and DUPLICATES exact copies of the first ones."""
    table = pq.read_table(ALT_TEXTS).slice(0, N)
    path = tmp_path_factory.mktemp("curate") / "alt_texts.parquet"
    pq.write_table(pa.concat_tables([table, table.slice(0, DUPLICATES)]), path)
    return path


def options(name: str, tmp_path: Path) -> dict:
    """The example's options for ``name``, made small; extra files written to tmp_path."""
    example = tomllib.loads((ROOT / "examples" / "curate_alt_texts.toml").read_text())
    mode = tomllib.loads((ROOT / "examples" / "mode_experts_curate.toml").read_text())
    if name == "metaclip":
        meta = tmp_path / "meta.json"
        meta.write_text(json.dumps(["a", "the", "of", "with", "photo", "black", "new"]))
        return {**example["scorers"]["metaclip"], "wordnet": False, "metadata": str(meta), "t": 20}
    if name == "retrieval":
        seeds = tmp_path / "seeds.parquet"
        pq.write_table(pa.table({"text": ["a dog on a beach", "a red car for sale"]}), seeds)
        return {"seeds": str(seeds), "k": 20}
    if name == "balanced":
        return {"target": 150, "levels": [12, 3]}
    if name == "mode":
        return {**mode["scorers"]["mode"], "fine_clusters": 12, "experts": 3}
    return example["scorers"][name]


def curate(tmp_path: Path, records: Path, name: str, capsys) -> tuple[dict, pa.Table, Store]:
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "c.toml",
        {"name": f"e2e-{name}", "seed": 0},
        {
            "input": {"path": str(records), "text": "TEXT", "chunk_size": 150},
            "output": {"dir": str(out)},
            "embedder": {"name": "hashing"},
            f"scorers.{name}": options(name, tmp_path),
        },
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["curate", str(config), "--storage", url, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    scores = pq.read_table(out / "scores.parquet")
    kept = pq.read_table(out / "kept.parquet")
    assert len(scores) == N + DUPLICATES and scores.column("id").to_pylist() == list(
        range(len(scores))
    )
    keep = scores.column("keep").to_numpy()
    texts = pq.read_table(records, columns=["TEXT"]).column("TEXT").to_pylist()
    assert kept.column("TEXT").to_pylist() == [t for t, k in zip(texts, keep, strict=True) if k]
    return summary, scores, Store(url)


@pytest.mark.parametrize(
    "name", ["metaclip", "text-quality", "dedup", "balanced", "retrieval", "mode"]
)
def test_curate_runs_each_builtin_scorer(tmp_path, records, name, capsys) -> None:
    summary, scores, store = curate(tmp_path, records, name, capsys)
    keep = scores.column("keep").to_numpy()
    kept = int(keep.sum())
    study = store.get_study(f"e2e-{name}")
    assert study.kind == "curate" and study.state == "finished"
    assert summary["kept"] == kept
    total = N + DUPLICATES
    if name == "dedup":  # each copy is dropped, and at most one of each pair is kept
        assert not (keep[:DUPLICATES] & keep[N:]).any() and kept <= N
    elif name == "text-quality":  # drops the lowest 20% by its score
        assert 0.5 * total < kept <= 0.8 * total + 1
    elif name == "balanced":
        assert kept == 150
    elif name == "retrieval":  # the 20 nearest pool records of each of 2 seeds
        assert 20 <= kept <= 40
    elif name == "metaclip":  # t = 20 caps the frequent entries
        assert 0 < kept < total
    else:  # mode assigns every record one of 3 experts and keeps all
        experts = np.asarray(scores.column("mode.expert").to_pylist())
        assert set(experts) == {0, 1, 2} and kept == total
