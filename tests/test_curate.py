"""`platform curate`: streaming record files through scorers, resumably, on real alt-texts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoplat import hookimpl
from autoplat.cli import main
from autoplat.core.curation import load_curate_config, run_curation, run_scorer
from autoplat.core.errors import ConfigError, DataError
from autoplat.core.interfaces import Chunk, Options, Scorer
from autoplat.core.records import RecordFile
from autoplat.core.registry import get_registry
from autoplat.core.store import Store
from autoplat.testing import registered_plugin

ALT_TEXTS = Path(__file__).parents[1] / "examples" / "data" / "alt_texts_10k.parquet"


class MinWords(Scorer):
    """Keeps texts of at least ``min_words`` words (one pass)."""

    name = "t-min-words"

    class Options(Options):
        min_words: int = 3

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        words = np.array([len(t.split()) for t in chunk.text], dtype=np.int64)
        return {"words": words, "keep": words >= self.options.min_words}


class LongerThanMedian(Scorer):
    """Keeps texts longer than the corpus median (two passes); can stop at a chunk."""

    name = "t-long"
    two_pass = True

    class Options(Options):
        stop_at_id: int = -1  # raise KeyboardInterrupt when scoring the chunk with this id

    def setup(self, context) -> None:
        self.lengths: list[int] = []

    def fit(self, chunk: Chunk) -> None:
        self.lengths.extend(len(t) for t in chunk.text)

    def finish_fit(self) -> None:
        self.threshold = float(np.median(self.lengths))

    def state(self):
        return self.threshold

    def load_state(self, state) -> None:
        self.threshold = state

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        if self.options.stop_at_id in chunk.ids:
            raise KeyboardInterrupt
        length = np.array([len(t) for t in chunk.text], dtype=np.float64)
        return {"length": length, "keep": length > self.threshold}

    def summary(self) -> dict:
        return {"median_length": self.threshold}


class Plugin:
    @hookimpl
    def register_scorers(self, register):
        register(MinWords)
        register(LongerThanMedian)


@pytest.fixture(scope="module", autouse=True)
def scorers():
    with registered_plugin(Plugin(), "curate-test-scorers"):
        yield


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config(tmp_path: Path, input_path: Path, text: str = "TEXT", extra: str = "", **kw) -> Path:
    chunk = kw.get("chunk_size", 1500)
    name = kw.get("name", "cur")
    return write_toml(
        tmp_path / f"{name}.toml",
        f"""
[study]
name = "{name}"
[input]
path = "{input_path}"
text = "{text}"
chunk_size = {chunk}
[output]
dir = "{tmp_path / (name + "-out")}"
[scorers.t-min-words]
min_words = 4
[scorers.t-long]
{extra}
""",
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def texts() -> list[str]:
    return pq.read_table(ALT_TEXTS, columns=["TEXT"]).column("TEXT").to_pylist()


def expected_keep(all_texts: list[str]) -> np.ndarray:
    lengths = np.array([len(t) for t in all_texts])
    words = np.array([len(t.split()) for t in all_texts])
    return (words >= 4) & (lengths > np.median(lengths))


def test_curates_the_real_alt_texts(tmp_path):
    before = digest(ALT_TEXTS)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    resolved = load_curate_config(config(tmp_path, ALT_TEXTS), get_registry())
    seen = []
    result = run_curation(resolved, store, progress=lambda *a: seen.append(a))
    assert digest(ALT_TEXTS) == before, "the input must never be touched"
    all_texts = texts()
    keep = expected_keep(all_texts)
    assert result.records == 10_000 and result.kept == int(keep.sum())
    scores = pq.read_table(result.scores_path)
    assert scores.column("id").to_pylist() == list(range(10_000))
    np.testing.assert_array_equal(scores.column("keep").to_numpy(), keep)
    assert scores.column("t-min-words.words").to_pylist()[:2] == [
        len(t.split()) for t in all_texts[:2]
    ]
    kept = pq.read_table(result.kept_path)
    assert kept.schema == pq.read_schema(ALT_TEXTS)
    assert kept.column("TEXT").to_pylist() == [t for t, k in zip(all_texts, keep, strict=True) if k]
    assert ("score", 10_000, 10_000) in seen and seen[0][0] == "fit"
    study = store.get_study("cur")
    assert study.kind == "curate" and study.state == "finished"
    by_scorer = {t.params_dict["scorer"]: t for t in store.trials(study.id)}
    assert by_scorer["t-long"].attrs_dict["summary"]["median_length"] == pytest.approx(
        np.median([len(t) for t in all_texts])
    )
    assert by_scorer["t-min-words"].value == pytest.approx(
        np.mean([len(t.split()) >= 4 for t in all_texts])
    )
    assert not (result.scores_path.parent / "parts").exists()


def test_resumes_after_an_interruption_with_the_same_result(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    path = config(tmp_path, ALT_TEXTS, extra="stop_at_id = 4600", name="a")
    with pytest.raises(KeyboardInterrupt):
        run_curation(load_curate_config(path, get_registry()), store)
    state = json.loads((tmp_path / "a-out" / "state.json").read_text())
    assert state["phase"] == "score" and state["chunks"] == 3  # chunks of 1500: 3 written
    assert store.get_study("a").state == "interrupted"
    with pytest.raises(ConfigError, match="--resume"):
        run_curation(load_curate_config(path, get_registry()), store)
    # the same config (but without the stop) continues at chunk 4
    path.write_text(path.read_text().replace("stop_at_id = 4600", ""))
    with pytest.raises(ConfigError, match="config changed"):
        run_curation(load_curate_config(path, get_registry()), store, resume=True)
    path.write_text(
        path.read_text().replace("[scorers.t-long]", "[scorers.t-long]\nstop_at_id = -1")
    )
    state_path = tmp_path / "a-out" / "state.json"
    state = json.loads(state_path.read_text())
    resolved = load_curate_config(path, get_registry())
    state["fingerprint"] = resolved.fingerprint()  # the user removed only the stop switch
    state_path.write_text(json.dumps(state))
    done = []
    result = run_curation(resolved, store, resume=True, progress=lambda *a: done.append(a))
    assert done[0] == ("score", 4500, 10_000), "resume starts after the chunks already written"
    np.testing.assert_array_equal(
        pq.read_table(result.scores_path).column("keep").to_numpy(), expected_keep(texts())
    )
    assert store.get_study("a").state == "finished"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_text_formats_keep_their_lines_verbatim(tmp_path, fmt):
    rows = [
        {"id": 1, "caption": "A red bicycle leaning on a wall"},
        {"id": 2, "caption": "logo"},
        {"id": 3, "caption": 'He said "hello, world" twice today'},
        {"id": 4, "caption": "line\nbreak inside a long caption here"},
    ]
    path = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "caption"])
            writer.writerows([r["id"], r["caption"]] for r in rows)
    toml = config(tmp_path, path, text="caption", chunk_size=3)
    toml.write_text(toml.read_text().replace("[scorers.t-long]\n", ""))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = run_curation(load_curate_config(toml, get_registry()), store)
    assert result.kept == 3
    again = run_curation(load_curate_config(toml, get_registry()), store, resume=True)
    assert again.kept == 3, "a finished run's outputs are counted again on --resume"
    kept = result.kept_path.read_text()
    if fmt == "jsonl":
        assert [json.loads(line)["id"] for line in kept.splitlines()] == [1, 3, 4]
    else:
        import csv

        parsed = list(csv.reader(kept.splitlines(keepends=True)))
        assert parsed[0] == ["id", "caption"] and [r[0] for r in parsed[1:]] == ["1", "3", "4"]
        assert parsed[3][1] == rows[3]["caption"]


# -- bad input: a clear error naming the file and row, exit 2, nothing lost ---------------
def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9 latte"}\n')
    csv_file = tmp_path / "bad.csv"
    csv_file.write_bytes(b"id,text\n1,fine\n2,ok\n3,\xff\xfe broken\n")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(ALT_TEXTS.read_bytes()[:500_000])
    binary = tmp_path / "binary.parquet"
    pq.write_table(pa.table({"text": pa.array([b"ok", b"ok", b"\xc3\x28"], pa.binary())}), binary)
    return {
        "non-UTF-8 JSONL": (jsonl, r"bad\.jsonl:2: not valid UTF-8"),
        "non-UTF-8 CSV": (csv_file, r"bad\.csv:4: not valid UTF-8"),
        "empty": (empty, r"empty\.parquet is empty"),
        "truncated Parquet": (truncated, r"truncated\.parquet: not a readable Parquet file"),
        "non-UTF-8 Parquet": (binary, r"binary\.parquet: row 3, column 'text': not valid UTF-8"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "non-UTF-8 JSONL",
        "non-UTF-8 CSV",
        "empty",
        "truncated Parquet",
        "non-UTF-8 Parquet",
    ],
)
def test_bad_files_name_the_file_and_row(tmp_path, case):
    path, message = bad_files(tmp_path)[case]
    with pytest.raises(DataError, match=message):
        for _ in RecordFile(path, "text", chunk_size=2).parts():
            pass


def test_missing_column_lists_the_columns():
    with pytest.raises(DataError, match="no column 'caption'; columns are URL, TEXT"):
        next(RecordFile(ALT_TEXTS, "caption").parts())


def test_cli_bad_input_exits_2_and_keeps_what_is_stored(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["curate", str(config(tmp_path, ALT_TEXTS, name="good")), "--storage", db]) == 0
    kept_before = digest(tmp_path / "good-out" / "kept.parquet")
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"TEXT": "a fine caption of words"}\n{"TEXT": "\xff"}\n')
    assert main(["curate", str(config(tmp_path, bad, name="bad")), "--storage", db]) == 2
    captured = capsys.readouterr()
    assert "bad.jsonl:2: not valid UTF-8" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert digest(tmp_path / "good-out" / "kept.parquet") == kept_before
    assert Store(db).get_study("good").state == "finished"
    assert main(["show", "good", "--storage", db]) == 0
    shown = capsys.readouterr().out
    assert "t-min-words" in shown and "all" in shown and "kept.parquet" in shown


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("t-min-words", "t-nope"), r"cur.toml:10: scorers.t-nope: unknown scorer 't-nope'"),
        (("min_words = 4", "min_word = 4"), "did you mean 'min_words'"),
        (('text = "TEXT"', 'text = "TEXT"\ncolumns = 3'), "unknown key"),
    ],
)
def test_config_errors_say_where(tmp_path, edit, message):
    path = config(tmp_path, ALT_TEXTS)
    path.write_text(path.read_text().replace(*edit))
    with pytest.raises(ConfigError, match=message):
        load_curate_config(path, get_registry())


# -- scorer states on disk: JSON + .npz, never pickle --------------------------------------
def two_pass_builtin(tmp_path: Path, name: str) -> Scorer:
    """A built-in two-pass scorer, with small options."""
    from autoplat.plugins.scorers.embedding.balanced import Balanced
    from autoplat.plugins.scorers.embedding.dedup import Dedup
    from autoplat.plugins.scorers.embedding.mode import MoDE
    from autoplat.plugins.scorers.embedding.retrieval import Retrieval
    from autoplat.plugins.scorers.metaclip import MetaCLIP, MetaCLIPOptions
    from autoplat.plugins.scorers.text_quality import TextQuality, TextQualityOptions
    from autoplat.testing import write_texts

    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(["a", "the", "of", "with", "photo", "black", "new"]))
    seeds = write_texts(tmp_path / "seeds.parquet", ["a dog on a beach", "a red car for sale"])
    return {
        "metaclip": lambda: MetaCLIP(MetaCLIPOptions(metadata=meta, t=20), seed=1),
        "text-quality": lambda: TextQuality(TextQualityOptions(prune_percentile=20), seed=1),
        "dedup": lambda: Dedup(Dedup.Options(threshold=0.9), seed=1),
        "balanced": lambda: Balanced(Balanced.Options(target=150, levels=[12, 3]), seed=1),
        "retrieval": lambda: Retrieval(Retrieval.Options(seeds=str(seeds), k=20), seed=1),
        "mode": lambda: MoDE(MoDE.Options(fine_clusters=12, experts=3), seed=1),
    }[name]()


@pytest.mark.parametrize(
    "name", ["metaclip", "text-quality", "dedup", "balanced", "retrieval", "mode"]
)
def test_every_builtin_scorer_state_survives_the_files(tmp_path, name):
    from autoplat.core.curation import load_states, save_states
    from autoplat.testing import chunked, embedding_context

    records = texts()[:400]
    fitted, fresh = two_pass_builtin(tmp_path, name), two_pass_builtin(tmp_path, name)
    context = embedding_context(tmp_path)
    whole = run_scorer(fitted, chunked(records, 150), context)
    save_states(tmp_path, {name: fitted.state()})
    assert sorted(p.name for p in tmp_path.glob("fit.*")) == ["fit.json", "fit.npz"]
    fresh.setup(context)
    fresh.load_state(load_states(tmp_path)[name])
    chunks = chunked(records, 150)
    for chunk in chunks:
        chunk.embeddings = context.embed(chunk.text) if "embedding" in fresh.needs else None
    parts = [fresh.score(chunk) for chunk in chunks]
    for column, values in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[column] for p in parts]), values)
    assert fresh.summary() == fitted.summary()


def test_a_state_that_is_not_plain_data_is_refused(tmp_path):
    from autoplat.core.curation import save_states
    from autoplat.core.errors import PluginError

    for bad, where in [
        ({"f": {1, 2}}, r"\['f'\] is a set"),
        ({"x": np.array([object()])}, r"\['x'\]: an array of Python objects"),
        ({3: 1}, "keys must be strings"),
    ]:
        with pytest.raises(PluginError, match=where):
            save_states(tmp_path, {"s": bad})
    assert not list(tmp_path.iterdir()), "nothing is written for a state that cannot be saved"


def test_state_files_round_trip_and_name_what_is_wrong(tmp_path):
    import pickle

    from autoplat.core.curation import load_states, save_states

    state = {"n": np.int64(3), "t": (1.5, None, "x"), "a": np.arange(4), "d": {"b": [True]}}
    save_states(tmp_path, {"s": state})
    back = load_states(tmp_path)["s"]
    np.testing.assert_array_equal(back.pop("a"), np.arange(4))
    assert back == {"n": 3, "t": [1.5, None, "x"], "d": {"b": [True]}}
    npz = (tmp_path / "fit.npz").read_bytes()
    doc = tmp_path / "fit.json"
    cases = [
        ("fit.json", b"{not json", "fit.json: not valid JSON"),
        ("fit.json", b'{"format": 2, "scorers": {}}', "fit.json: not a scorer state file"),
        ("fit.json", b'{"format": 1, "scorers": {"s": {"$array": "zz"}}}', "names no array"),
        ("fit.npz", pickle.dumps({"a": 1}), "fit.npz: not a readable .npz"),
        ("fit.npz", npz[:100], "fit.npz: not a readable .npz"),
    ]
    good = doc.read_bytes()
    for name, content, message in cases:
        doc.write_bytes(good)
        (tmp_path / "fit.npz").write_bytes(npz)
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError) as info:
            load_states(tmp_path)
        path, detail = info.value.args
        assert message in f"{Path(path).name}: {detail}"
    # an object array inside an otherwise valid .npz is not unpickled
    doc.write_bytes(good)
    with open(tmp_path / "fit.npz", "wb") as f:
        np.savez(f, a0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_states(tmp_path)


def test_an_input_without_records_says_so(tmp_path):
    empty = tmp_path / "none.parquet"
    pq.write_table(pa.table({"TEXT": pa.array([], pa.string())}), empty)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(DataError, match=r"none\.parquet holds no records"):
        run_curation(load_curate_config(config(tmp_path, empty), get_registry()), store)
