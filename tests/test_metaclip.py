"""The MetaCLIP scorer: matching rule, matcher vs reference, balancing, metadata, CLI.

On the 10,000 real alt-texts of examples/data where an answer can be checked against
MetaCLIP's plain-Python matching (``reference_match``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from autoplat.cli import main
from autoplat.core.curation import bare_context, run_scorer
from autoplat.core.errors import ConfigError
from autoplat.core.registry import get_registry
from autoplat.plugins.scorers.metaclip import (
    WORDNET_DIR,
    Matcher,
    MetaCLIP,
    MetaCLIPOptions,
    build_metadata,
    load_metadata,
    reference_match,
    reference_matcher,
    spacing,
)
from autoplat.testing import ScorerContract, chunked

ALT_TEXTS = Path(__file__).parents[1] / "examples/data/alt_texts_10k.parquet"
HAS_WORDNET = (WORDNET_DIR / "data.noun").is_file()
NO_WORDNET = f"WordNet is not installed in {WORDNET_DIR} (apt-get install wordnet-base)"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return pq.read_table(ALT_TEXTS, columns=["TEXT"]).column("TEXT").to_pylist()


def write_metadata(path: Path, entries) -> Path:
    path.write_text(json.dumps(entries))
    return path


def scorer(path: Path, t: int = 100, seed: int = 0) -> MetaCLIP:
    return MetaCLIP(MetaCLIPOptions(metadata=path, t=t), seed=seed)


def matched(entries: list[str], text: str) -> list[str]:
    """Entries ``Matcher`` finds in ``text``, checked against the reference on the way."""
    captions, found = Matcher(entries).match([text])
    assert captions.tolist() == [0] * len(found)
    assert found.tolist() == reference_match(text, entries)
    return [entries[i] for i in found]


# -- the matching rule, by hand -------------------------------------------------------------
def test_spacing_is_metaclips():
    assert spacing("a,b.c") == " a , b . c "
    assert spacing("x\ty\nz\rw") == " x y z w "
    assert spacing("what?! `x`; y: z") == " what ?  !   ` x `  ;  y :  z "


@pytest.mark.parametrize(
    ("text", "entries", "want"),
    [
        ("Hot dogs, cats.", ["dogs", "cats", "cats.", "dogs,", "Hot"], ["dogs", "cats", "Hot"]),
        ("Dog on a sofa", ["dog", "Dog", "sofa", "Sofa"], ["Dog", "sofa"]),  # case-sensitive
        ("hot\tdog\nstand", ["hot dog", "dog stand", "hot"], ["hot dog", "dog stand", "hot"]),
        ("dog", ["dog"], ["dog"]),  # the whole caption
        ("dog at night", ["dog", "night"], ["dog", "night"]),  # first and last word
        ("hotdog doggy", ["dog", "hot"], []),  # only whole words
        (
            "New York City",
            ["New York", "York City", "New", "City", "New York City"],
            ["New York", "York City", "New", "City", "New York City"],
        ),
        ("a b c", ["a b", "b c", "b", "a b c", "c"], ["a b", "b c", "b", "a b c", "c"]),
        ("dog dog, dog", ["dog"], ["dog"]),  # once per caption
        (
            "Tavern Brawl by velinov",
            ["Brawl by", "by velinov", "by"],
            ["Brawl by", "by velinov", "by"],
        ),  # overlapping, sharing a space
        ("Is it? Yes! `quoted`", ["it", "Yes", "quoted", "it?"], ["it", "Yes", "quoted"]),
        ("café 🙂 au lait", ["🙂", "au lait", "café", "caf"], ["🙂", "au lait", "café"]),
        ("two  spaces", ["two spaces", "two", "spaces"], ["two", "spaces"]),
        ("line\r\nbreak", ["line break", "line", "break"], ["line", "break"]),  # \r\n: 2 spaces
        # ". " becomes " .  ": an entry with punctuation never matches
        ("St. Louis", ["St. Louis", "St . Louis", "St .", "Louis"], ["St .", "Louis"]),
    ],
)
def test_matching_rule(text, entries, want):
    assert sorted(matched(entries, text)) == sorted(want)


@pytest.mark.parametrize(
    "text",
    ["a  b", " a b ", "", "dog", "dog.", "hot dog  stand", "x\ty  z", "b a b a"],
)
def test_odd_entries_match_as_the_reference(text):
    """Empty entries, entries with outer or double spaces, and duplicates (each index)."""
    entries = ["", " b", "a ", "a  b", "a b", "dog", "dog", " ", "  ", "dog  stand", "b a b"]
    matched(entries, text)  # checks every index against reference_match


def test_hash_table_finds_every_key_through_collisions():
    from autoplat.plugins.scorers.metaclip import _Table

    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(1, 2**63, 5000, dtype=np.uint64))
    table = _Table(keys, np.arange(len(keys)))
    assert (table.get(keys) == np.arange(len(keys))).all()
    absent = np.setdiff1d(rng.integers(1, 2**63, 5000, dtype=np.uint64), keys)
    assert (table.get(absent) == -1).all()


def test_nul_characters_fall_back_to_one_caption_at_a_time():
    entries = ["a", "b", "a\x00b", "c"]
    texts = ["a\x00b", "c a", "", "b"]
    captions, found = Matcher(entries).match(texts)
    got = [[e for c, e in zip(captions, found, strict=True) if c == i] for i in range(4)]
    assert got == [reference_match(t, entries) for t in texts]
    captions, found = Matcher(["a", "b", "y"]).match(["x a\x00b y", "b"])  # NUL in a caption
    assert list(zip(captions.tolist(), found.tolist(), strict=True)) == [(0, 2), (1, 1)]


def test_matcher_equals_reference_on_real_alt_texts(texts):
    """2,500 entries: common words, their capitalized forms, frequent pairs of the corpus."""
    import wordfreq

    words = wordfreq.top_n_list("en", 1200)
    pairs = Counter(p for t in texts[:3000] for p in zip(t.split(), t.split()[1:], strict=False))
    entries = list(
        dict.fromkeys(
            [
                *words,
                *(w.capitalize() for w in words[:800]),
                *(f"{a} {b}" for (a, b), _ in pairs.most_common(600)),
            ]
        )
    )[:2500]
    assert len(entries) == 2500
    captions, found = Matcher(entries).match(texts)
    reference = reference_matcher(entries)
    want = [reference(text) for text in texts]
    starts = np.searchsorted(captions, np.arange(len(texts) + 1))
    got = [found[a:b].tolist() for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert got == want
    assert len(found) > 25_000 and sum(map(bool, want)) > 7500  # it did match a lot


# -- balancing ------------------------------------------------------------------------------
def test_below_t_keeps_every_matched_caption_and_drops_the_rest(texts, tmp_path):
    path = write_metadata(tmp_path / "m.json", ["dog", "Dog", "Paris", "Stock"])
    columns = run_scorer(scorer(path, t=10_000), chunked(texts, 2500))
    want = np.array([len(reference_match(t, ["dog", "Dog", "Paris", "Stock"])) for t in texts])
    np.testing.assert_array_equal(columns["matches"], want)
    np.testing.assert_array_equal(columns["keep"], want > 0)  # no match: dropped
    assert 300 < columns["keep"].sum() < 1000


@pytest.mark.parametrize("seed", [0, 1])
def test_head_entries_keep_t_over_count(texts, tmp_path, seed):
    entries = ["of", "and", "Stock"]
    path = write_metadata(tmp_path / "m.json", entries)
    s = scorer(path, t=200, seed=seed)
    columns = run_scorer(s, chunked(texts, 1000))
    has = np.array([[e in reference_match(t, entries) for e in range(3)] for t in texts])
    counts = has.sum(0)
    np.testing.assert_array_equal(s.counts, counts)
    assert counts[0] > 900 and counts[1] > 900 and 300 < counts[2] < 400
    p = np.minimum(1.0, 200 / counts)
    keep = columns["keep"]
    for only in range(3):  # captions matching exactly one entry: kept with t / count
        rows = has[:, only] & (has.sum(1) == 1)
        sd = np.sqrt(p[only] * (1 - p[only]) / rows.sum())
        assert abs(keep[rows].mean() - p[only]) < 4 * sd + 1e-9, entries[only]
    both = has[:, 0] & has[:, 1] & ~has[:, 2]  # kept when either draw keeps it
    want = 1 - (1 - p[0]) * (1 - p[1])
    assert abs(keep[both].mean() - want) < 4 * np.sqrt(want * (1 - want) / both.sum())
    assert not keep[~has.any(1)].any()
    summary = s.summary()
    assert summary["head_entries"] == 3 and summary["t"] == 200
    assert summary["top_entries"][0] == [entries[counts.argmax()], int(counts.max())]
    assert summary["records_kept"] == keep.sum() and summary["records_matched"] == has.any(1).sum()
    json.dumps(summary)


def test_min_count_and_resume_from_state(texts, tmp_path):
    entries = ["of", "Stock", "Paris", "dog"]
    path = write_metadata(tmp_path / "m.json", entries)
    first = scorer(path, t=50)
    first.setup(bare_context(tmp_path))
    chunks = chunked(texts, 3000)
    for chunk in chunks:
        first.fit(chunk)
    first.finish_fit()
    state = first.state()
    resumed = scorer(path, t=50)
    resumed.setup(bare_context(tmp_path))
    resumed.load_state(state)
    for chunk in chunks:
        a, b = first.score(chunk), resumed.score(chunk)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        for i, text in enumerate(chunk.text):
            counts = [first.counts[e] for e in reference_match(text, entries)]
            assert a["min_count"][i] == (min(counts) if counts else 0)
    assert resumed.summary()["records"] == len(texts)
    other = scorer(write_metadata(tmp_path / "other.json", entries[:2]))
    other.setup(bare_context(tmp_path))
    with pytest.raises(ConfigError, match="metadata changed"):
        other.load_state(state)


class TestMetaCLIPContract(ScorerContract):
    @pytest.fixture
    def make_scorer(self, tmp_path):
        entries = ["a", "photo", "dog", "cats", "red sofa", "The", "fox", "harbour", "logo"]
        path = write_metadata(tmp_path / "entries.json", entries)
        return lambda: scorer(path, t=3, seed=7)


def test_registered_as_a_scorer():
    assert get_registry().get("scorers", "metaclip") is MetaCLIP


# -- options and metadata files -------------------------------------------------------------
def test_options_need_exactly_one_source(tmp_path):
    with pytest.raises(ValidationError, match="either metadata"):
        MetaCLIPOptions()
    with pytest.raises(ValidationError, match="either metadata"):
        MetaCLIPOptions(metadata=tmp_path / "m.json", wordnet=True)
    with pytest.raises(ValidationError, match="max_entries applies to wordnet"):
        MetaCLIPOptions(metadata=tmp_path / "m.json", max_entries=10)
    with pytest.raises(ValidationError, match="extra"):
        MetaCLIPOptions(wordnet=True, threshold=5)
    with pytest.raises(ValidationError):
        MetaCLIPOptions(wordnet=True, t=0)
    assert MetaCLIPOptions(wordnet=True).t == 100


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ('["dog", ', "invalid JSON at line 1"),
        ('{"dog": 1}', "holds a JSON dict, not an array"),
        ("[]", "the array is empty"),
        ('["dog", "cat", 3]', "item 2 is 3, not a string"),
        ('["dog", null]', "item 1 is null, not a string"),
        ('["dog", " "]', "item 1 is empty"),
    ],
)
def test_bad_metadata_file(tmp_path, content, message):
    path = tmp_path / "entries.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        scorer(path).setup(bare_context(tmp_path))
    assert str(path) in str(info.value)


def test_metadata_folder_and_duplicates(tmp_path, caplog):
    with pytest.raises(ConfigError, match="is a folder"):
        load_metadata(tmp_path)
    path = write_metadata(tmp_path / "m.json", ["dog", "cat", "dog"])
    with caplog.at_level(logging.WARNING):
        assert load_metadata(path) == ["dog", "cat"]
    assert "1 duplicate" in caplog.text


# -- the builder and its command ------------------------------------------------------------
@pytest.fixture(scope="module")
def built() -> tuple[list[str], dict[str, int]]:
    if not HAS_WORDNET:
        pytest.skip(NO_WORDNET)
    counts: dict[str, int] = {}
    return build_metadata(counts=counts), counts


def test_build_metadata_from_wordnet_and_wordfreq(built):
    entries, counts = built
    assert len(entries) == 500_000 == len(set(entries))
    assert list(counts) == ["wordnet", "wordfreq-unigrams", "gloss-bigrams", "capitalized"]
    assert counts["wordnet"] > 140_000 and counts["wordfreq-unigrams"] > 200_000
    assert counts["gloss-bigrams"] > 1000 and sum(counts.values()) == 500_000
    known = {
        "dog",
        "hot dog",
        "Paris",
        "New York",
        "South America",
        "the",
        "Coffee",
        "photo",
        "Walt Disney",
        "black",
        "Black",
        "Homo sapiens",
        "Dragonfly",
    }
    assert known <= set(entries)
    assert entries[:4] == ["the", "to", "and", "of"]  # most frequent first
    assert not any(c in e for e in entries for c in ",.;:?!`\t\n")  # they could never match


@pytest.fixture(scope="module")
def without_wordnet(tmp_path_factory) -> tuple[list[str], dict[str, int], str, Path]:
    missing = tmp_path_factory.mktemp("empty") / "no-wordnet"
    counts: dict[str, int] = {}
    logger = logging.getLogger("autoplat.plugins.scorers.metaclip")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        entries = build_metadata(200_000, missing, counts)
    finally:
        logger.removeHandler(handler)
    return entries, counts, " ".join(r.getMessage() for r in records), missing


def test_build_metadata_without_wordnet_uses_wordfreq(without_wordnet):
    entries, counts, warnings, _ = without_wordnet
    assert "apt-get install wordnet-base" in warnings
    assert len(entries) == 200_000 == len(set(entries))
    assert {"dog", "photo", "the"} <= set(entries)
    assert counts == {"wordfreq-unigrams": 200_000, "capitalized": 0}


def test_cli_writes_a_json_list(tmp_path, capsys, without_wordnet):
    # without WordNet (faster; the list with it is tested above): the same command
    out = tmp_path / "entries.json"
    argv = ["metaclip-metadata", "--out", str(out), "--max-entries", "20000"]
    assert main([*argv, "--wordnet-dir", str(without_wordnet[3])]) == 0
    entries = json.loads(out.read_text())
    assert entries == without_wordnet[0][:20_000]  # the cut keeps the most frequent
    assert {"dog", "the"} <= set(entries)
    assert f"wrote 20,000 entries to {out}" in capsys.readouterr().out
    assert load_metadata(out) == entries  # usable as the scorer's metadata


def test_cli_errors(tmp_path, capsys):
    out = tmp_path / "missing" / "entries.json"
    assert main(["metaclip-metadata", "--out", str(out)]) == 2
    assert "does not exist; create it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["metaclip-metadata", "--out", str(out), "--max-entries", "0"])
    assert "at least 1" in capsys.readouterr().err
