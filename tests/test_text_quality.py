"""The text-quality scorer (Sharma et al. 2024) and its reference language models, on real
alt-texts and on hand-checked strings."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoplat.core.curation import bare_context, load_curate_config, run_scorer
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import Chunk
from autoplat.core.registry import get_registry
from autoplat.plugins.scorers.language_models import (
    WORDNET_DIR,
    HuggingFaceLM,
    HuggingFaceOptions,
    NGramLM,
    NGramOptions,
    has_wordnet,
    lm_tokens,
    perplexity,
)
from autoplat.plugins.scorers.text_quality import (
    BIT,
    FILTERS,
    POS_FILTERS,
    TOKEN_RE,
    TextQuality,
    TextQualityOptions,
    WordNetLexicon,
    lexicon_flags,
    surface_bits,
)
from autoplat.testing import ScorerContract, chunked

ALT_TEXTS = Path(__file__).parents[1] / "examples" / "data" / "alt_texts_10k.parquet"
needs_wordnet = pytest.mark.skipif(not has_wordnet(WORDNET_DIR), reason="no WordNet here")


@pytest.fixture(scope="module")
def alt_texts() -> list[str]:
    return pq.read_table(ALT_TEXTS, columns=["TEXT"]).column("TEXT").to_pylist()[:2000]


def passes(line: str) -> set[str]:
    bits, _ = surface_bits(line)
    return {name for name in FILTERS if bits & BIT[name]}


# -- the filters, hand-checked ------------------------------------------------------------
def test_case_filters():
    assert {"first_letter_caps", "no_all_caps"} <= passes("Hogsmeade Station")
    assert "first_letter_caps" not in passes("used Peugeot 108 in wirral")
    assert "no_all_caps" not in passes("IMG_0042.JPG")  # every cased character is upper
    assert "no_all_caps" in passes("EASY sunflower kissing balls")


def test_ratio_filters():
    # repetition: 1 - distinct/total words; 0.2 passes, 0.4 does not
    assert "word_repetition" in passes("a dog and a cat")  # 1 - 4/5
    assert "word_repetition" not in passes("the dog and the dog")  # 1 - 3/5
    # digit/punctuation characters per whitespace word: 1/7 passes, (2 + 4)/7 does not
    assert "digit_punctuation" in passes("Coffee Table with Tray Top Color: Gray")
    assert "digit_punctuation" not in passes("Sunset over the harbour, long exposure, 2019")
    assert "digit_punctuation" not in passes("IMG_0042.JPG")  # 7 symbols, 1 word


def test_content_filters():
    assert "no_curly_brace" not in passes("function() { return 1 }")
    assert "no_javascript" not in passes("Please enable JavaScript to view")
    assert "no_javascript" not in passes("Lorem ipsum dolor sit amet")
    assert "no_javascript" in passes("A photo of Java island")
    for ending in (".", "!", "?", '"'):
        assert "terminal_punctuation" in passes(f"It works{ending}")
    assert "terminal_punctuation" not in passes("Tavern Brawl by velinov")
    # at least two occurrences of the, be, to, of, and, that, have, with
    assert "stop_words" in passes("The Original Rich Dad Board Game with Bonus")
    assert "stop_words" not in passes("Pressure gauge with bokeh")


# -- each threshold of the paper's Table 1: just below, at, just above -----------------------
def words(n: int) -> str:
    """``n`` distinct words."""
    return " ".join(f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(n))


@pytest.mark.parametrize(("n", "passing"), [(2, False), (3, False), (4, True)])
def test_token_count_more_than_3(n, passing):
    assert ("token_count" in passes(words(n))) is passing
    assert ("token_count" in passes("a photo" + "." * (n - 2))) is passing  # symbols count


@pytest.mark.parametrize(
    ("n", "passing"), [(2, False), (3, False), (4, True), (255, True), (256, False), (257, False)]
)
def test_word_count_more_than_3_fewer_than_256(n, passing):
    assert ("word_count" in passes(words(n))) is passing


@pytest.mark.parametrize(("repeats", "passing"), [(1, True), (2, True), (3, False)])
def test_word_repetition_at_most_0_2(repeats, passing):
    """10 words, ``repeats`` of them repeats: ratio 0.1, 0.2 (passes), 0.3."""
    line = words(10 - repeats) + " Wab," * repeats  # case and punctuation do not count
    assert ("word_repetition" in passes(line)) is passing


@pytest.mark.parametrize(("symbols", "passing"), [(1, True), (2, True), (3, False)])
def test_digit_punctuation_at_most_0_25(symbols, passing):
    """8 words, ``symbols`` digit/punctuation characters: 0.125, 0.25 (passes), 0.375."""
    line = words(7) + " x" + "7?!"[:symbols]
    assert ("digit_punctuation" in passes(line)) is passing
    assert ("digit_punctuation" in passes(words(7) + " x" + "«»…"[:symbols])) is passing
    assert "digit_punctuation" in passes(words(7) + " x™©®")  # symbols, not punctuation


@pytest.mark.parametrize(("stop", "passing"), [(1, False), (2, True), (3, True)])
def test_at_least_2_stop_words(stop, passing):
    line = words(4) + " " + " ".join(["The", "with,", "of"][:stop])
    assert ("stop_words" in passes(line)) is passing


@pytest.mark.parametrize(("end", "passing"), [(".", True), ("!", True), ("?", True),
                                              ('"', True), ("”", False), (",", False)])  # fmt: skip
def test_terminal_punctuation_is_the_paper_four(end, passing):
    assert ("terminal_punctuation" in passes("It works" + end)) is passing


@needs_wordnet
def test_part_of_speech_filters():
    lexicon = WordNetLexicon(WORDNET_DIR)

    def flags(line: str) -> dict[str, bool]:
        tokens = TOKEN_RE.findall(line)
        return dict(zip(POS_FILTERS, lexicon_flags(tokens, lexicon.tag(tokens)), strict=True))

    assert flags("a photo of a dog") == dict.fromkeys(POS_FILTERS, True)
    assert flags("click here") == dict.fromkeys(POS_FILTERS, False)
    # a noun and no determiner; nothing takes an object
    assert flags("Hogsmeade Station") == {
        "has_object": False,
        "has_noun": True,
        "has_determiner": False,
        "text_complexity": False,
    }
    # an object ("a ball" after "chases") but not linked to an earlier noun
    assert flags("chases a ball") == {
        "has_object": True,
        "has_noun": True,
        "has_determiner": True,
        "text_complexity": False,
    }
    assert flags("The dog chases a ball")["text_complexity"]


@needs_wordnet
def test_every_filter_on_real_alt_texts(tmp_path):
    """Two real alt-texts (rows 1 and 9901 of the file), their 14 filters checked by hand."""
    scorer = TextQuality(TextQualityOptions(weights={"stop_words": 1}, pos="wordnet"))
    scorer.setup(bare_context(tmp_path))
    line = "Looking downstream, the river channel curves into a dark band of bare trees."
    assert set(scorer.analyse([line])["bits"].tolist()) == {(1 << len(FILTERS)) - 1}
    bits = int(scorer.analyse(["Tavern Brawl by velinov"])["bits"][0])
    failing = {name for name in FILTERS if not bits & BIT[name]}
    assert failing == {"terminal_punctuation", "stop_words", "has_determiner"}


# -- the reference n-gram model against an independent implementation ------------------------
CORPUS = [
    "the dog chases the cat",
    "a dog sleeps on the sofa",
    "the cat sleeps on a red sofa",
    "two dogs play with a ball",
    "The cat and the dog are friends.",
    "a photo of the dog",
]


def reference_logprobs(
    corpus: list[str], line: str, order: int, lam: float, mix: float = 0.5
) -> list[float]:
    """Interpolated Kneser-Ney from its textbook definition, with plain dicts, mixed
    linearly with the open unigram (``mix``; 0.1 for the end of the line)."""
    from wordfreq import word_frequency

    pad = ["<s>"] * (order - 1)
    sentences = [pad + lm_tokens(s) + ["</s>"] for s in corpus]

    def p_open(w: str) -> float:
        if w == "</s>":
            return 0.0
        wf = word_frequency(w, "en") if any(c.isalnum() for c in w) else 0.0
        return 0.9 * wf + 0.1 * 0.2 * 0.8 ** (len(w) - 1) * 64.0 ** (-len(w))

    def discount(counts) -> float:
        n1 = sum(c == 1 for c in counts)
        n2 = sum(c == 2 for c in counts)
        return n1 / (n1 + 2 * n2) if n1 and n2 else 0.75

    top = Counter(
        tuple(s[i - order + 1 : i + 1]) for s in sentences for i in range(order - 1, len(s))
    )
    if order == 3:  # continuation counts: distinct left words, raw after <s>
        bigrams: Counter = Counter()
        for (_, v, w), c in top.items():
            bigrams[(v, w)] += c if v == "<s>" else 1
    else:
        bigrams = top
    cont = Counter(w for (_, w) in bigrams)
    total = sum(cont.values())

    def p1(w):
        return (1 - lam) * cont[w] / total + lam * p_open(w)

    def level(counts):
        ctx = defaultdict(lambda: [0, 0])
        for key, c in counts.items():
            ctx[key[:-1]][0] += c
            ctx[key[:-1]][1] += 1
        return ctx, discount(counts.values())

    ctx2, d2 = level(bigrams)
    ctx3, d3 = level(top) if order == 3 else ({}, 0)

    def p2(v, w):
        den, types = ctx2.get((v,), (0, 0))
        return (max(bigrams.get((v, w), 0) - d2, 0) + d2 * types * p1(w)) / den if den else p1(w)

    def p3(u, v, w):
        den, types = ctx3.get((u, v), (0, 0))
        lower = p2(v, w)
        return (max(top.get((u, v, w), 0) - d3, 0) + d3 * types * lower) / den if den else lower

    tokens = pad + lm_tokens(line) + ["</s>"]
    out = []
    for i in range(order - 1, len(tokens)):
        p = p3(*tokens[i - 2 : i + 1]) if order == 3 else p2(*tokens[i - 1 : i + 1])
        unigram = 0.1 if tokens[i] == "</s>" else p_open(tokens[i])
        out.append(math.log((1 - mix) * p + mix * unigram))
    return out


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path


LINES = [
    "the dog sleeps on the sofa",
    "A red ball.",
    "dogs chase cats with the ball",
    "IMG_0042.JPG",
    "zebra of the night",
    "",
]


@pytest.mark.parametrize(("order", "mix"), [(2, 0.5), (3, 0.5), (3, 0.0), (3, 0.8)])
def test_ngram_matches_textbook_kneser_ney(corpus_file, order, mix):
    options = NGramOptions(wordnet_dir=None, corpus=[str(corpus_file)], order=order)
    lm = NGramLM(options.model_copy(update={"unigram_weight": mix}))
    lm.setup()
    ll, tokens = lm.log_likelihood(LINES)
    for line, got, n in zip(LINES, ll, tokens, strict=True):
        expected = reference_logprobs(CORPUS, line, order, 0.5, mix)
        assert n == len(expected)
        assert got == pytest.approx(sum(expected), rel=1e-9, abs=1e-9), line


def test_ngram_cache_dir_round_trip(corpus_file, tmp_path):
    options = {
        "wordnet_dir": "",
        "corpus": [str(corpus_file)],
        "order": 3,
        "cache_dir": str(tmp_path),
    }
    first = NGramLM(NGramOptions(**options))
    first.setup()
    assert len(list(tmp_path.glob("ngram-*.npz"))) == 1
    from autoplat.plugins.scorers import language_models

    language_models._TABLES.clear()  # force a read of the cache
    second = NGramLM(NGramOptions(**options))
    second.setup()
    np.testing.assert_array_equal(first.log_likelihood(LINES)[0], second.log_likelihood(LINES)[0])


def test_weights_follow_the_formula(corpus_file):
    """w_i = max(0, (PPL_all - PPL_i) / PPL_all) with PPLs of the LM computed independently."""
    docs = ["the dog sleeps on the sofa\nA red ball.", "dogs chase cats with the ball", *LINES[3:]]
    options = {"wordnet_dir": "", "corpus": [str(corpus_file)], "order": 3}
    scorer = TextQuality(
        TextQualityOptions(language_model_options=options, pos="none", prune_percentile=50)
    )
    run_scorer(scorer, chunked(docs, 2))
    summary = scorer.summary()
    lines = [line for doc in docs for line in doc.splitlines() if line.strip()]
    ll = [sum(reference_logprobs(CORPUS, line, 3, 0.5)) for line in lines]
    n = [len(lm_tokens(line)) + 1 for line in lines]

    def ppl(mask):
        return math.exp(
            -sum(x for x, m in zip(ll, mask, strict=True) if m)
            / sum(t for t, m in zip(n, mask, strict=True) if m)
        )

    ppl_all = ppl([True] * len(lines))
    assert summary["ppl_all"] == pytest.approx(ppl_all, rel=1e-6)
    for name in FILTERS:
        mask = [name in passes(line) for line in lines]
        entry = summary["filters"][name]
        if name in POS_FILTERS:  # pos = "none": dropped
            assert entry["weight"] == 0
            continue
        expected = max(0.0, (ppl_all - ppl(mask)) / ppl_all)
        assert entry["ppl"] == pytest.approx(ppl(mask), rel=1e-6), name
        assert entry["weight"] == pytest.approx(expected, rel=1e-6, abs=1e-9), name
    assert summary["pos"].startswith("none") and summary["dropped_filters"] == list(POS_FILTERS)
    assert summary["kept_fraction"] == 0.4  # 5 records: 2.5 pruned, rounded half up
    # every line scored in the first pass (no sample): the same weights
    every = TextQuality(
        TextQualityOptions(language_model_options=options, pos="none", lm_sample_lines=0)
    )
    run_scorer(every, chunked(docs, 3))
    assert every.summary()["filters"] == summary["filters"]
    assert every.summary()["lm_lines"] == len(lines)


def test_record_score_is_token_weighted_mean_of_line_scores():
    """Eqs. 2-3 by hand with given weights: terminal punctuation 1, stop words 3."""
    docs = [
        "The cat sat on the mat with the hat.\nbuy now",  # 10 tokens scoring 1, 2 scoring 0
        "Of the dogs",  # stop words only: 3/4
        "",  # no text: 0
    ]
    weights = {"terminal_punctuation": 1.0, "stop_words": 3.0}
    scorer = TextQuality(TextQualityOptions(weights=weights, prune_percentile=0, pos="none"))
    columns = run_scorer(scorer, chunked(docs, 3))
    np.testing.assert_allclose(columns["score"], [10 / 12, 0.75, 0.0], rtol=1e-6)
    assert columns["keep"].all()
    assert scorer.summary()["weights_source"] == "config"


# -- the scorer on real alt-texts --------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(alt_texts):
    scorer = TextQuality(TextQualityOptions(prune_percentile=20), seed=3)
    columns = run_scorer(scorer, chunked(alt_texts, 700))
    return scorer, columns


def test_ngram_perplexity_real_vs_shuffled(alt_texts):
    lm = NGramLM(NGramOptions())
    lm.setup()
    rng = random.Random(0)

    def shuffle(text: str) -> str:
        words = text.split()
        rng.shuffle(words)
        return " ".join(words)

    real = perplexity(*lm.log_likelihood(alt_texts))
    shuffled = perplexity(*lm.log_likelihood([shuffle(t) for t in alt_texts]))
    assert real < 0.85 * shuffled, (real, shuffled)


def test_scores_and_pruning_on_real_alt_texts(fitted, alt_texts):
    scorer, columns = fitted
    score, keep = columns["score"], columns["keep"]
    assert len(score) == len(alt_texts) and score.dtype == np.float32
    assert ((score >= 0) & (score <= 1)).all()
    assert keep.sum() == 1600  # exactly 80% kept, ties broken per record
    assert score[keep].min() >= score[~keep].max()
    summary = scorer.summary()
    json.dumps(summary, allow_nan=False)
    assert summary["kept_fraction"] == 0.8 and summary["records"] == 2000
    assert summary["lm"]["lm"] == "ngram" and summary["weights_source"] == "language model"
    assert summary["pos"] in (
        "wordnet-lexicon",
        "none (has_object, has_noun, has_determiner, text_complexity dropped)",
    ) or summary["pos"].startswith("spacy")
    assert sum(f["weight"] > 0 for f in summary["filters"].values()) >= 3
    # clean English captions beat junk
    probe = [
        "IMG_0042.JPG",
        "click here",
        "DSC00123",
        "A brown dog runs across the grass with a ball in its mouth.",
        "Two children are playing with a kite on the beach.",
    ]
    probed = scorer.score(Chunk(ids=np.arange(10_000, 10_005), text=probe))["score"]
    assert min(probed[3:]) > max(probed[:3])
    assert min(probed[3:]) > np.median(score) > max(probed[:3])


def test_keep_does_not_depend_on_chunking(fitted, alt_texts):
    _, whole = fitted
    scorer = TextQuality(TextQualityOptions(prune_percentile=20), seed=3)
    parts = run_scorer(scorer, chunked(alt_texts, 333))
    np.testing.assert_array_equal(parts["keep"], whole["keep"])
    np.testing.assert_array_equal(parts["score"], whole["score"])


def test_resume_from_state(fitted, alt_texts, tmp_path):
    scorer, columns = fitted
    resumed = TextQuality(TextQualityOptions(prune_percentile=20), seed=3)
    resumed.setup(bare_context(tmp_path))
    resumed.load_state(scorer.state())
    out = resumed.score(Chunk(ids=np.arange(1000, 2000), text=alt_texts[1000:]))
    np.testing.assert_array_equal(out["keep"], columns["keep"][1000:])
    assert resumed.summary() == scorer.summary()


def test_sampled_weights_are_bounded_and_reproducible(alt_texts):
    options = TextQualityOptions(prune_percentile=30, lm_sample_lines=500)
    first = TextQuality(options)
    a = run_scorer(first, chunked(alt_texts, 600))
    b = run_scorer(TextQuality(options), chunked(alt_texts, 128))
    assert first.summary()["lm_lines"] == 500
    np.testing.assert_array_equal(a["keep"], b["keep"])
    assert a["keep"].sum() == 1400


def test_without_wordnet_drops_the_parser_filters(tmp_path, alt_texts):
    missing = str(tmp_path / "no-wordnet")
    options = TextQualityOptions(
        pos="auto", wordnet_dir=missing, language_model_options={"wordnet_dir": missing}
    )
    scorer = TextQuality(options)
    columns = run_scorer(scorer, chunked(alt_texts[:300], 300))
    summary = scorer.summary()
    if summary["pos"].startswith("spacy"):
        pytest.skip("spaCy is installed: it tags instead of WordNet")
    assert summary["pos"].startswith("none") and summary["dropped_filters"] == list(POS_FILTERS)
    assert all(summary["filters"][name]["weight"] == 0 for name in POS_FILTERS)
    assert summary["lm"]["source"] == "wordfreq-unigram"
    assert np.isfinite(columns["score"]).all() and columns["keep"].sum() == 240


# -- the conformance suite ---------------------------------------------------------------------
class TestTextQualityContract(ScorerContract):
    @pytest.fixture
    def make_scorer(self):
        return lambda: TextQuality(TextQualityOptions(prune_percentile=25))


class TestTextQualityGivenWeightsContract(ScorerContract):
    @pytest.fixture
    def make_scorer(self):
        weights = {"stop_words": 2.0, "has_noun": 1.0, "terminal_punctuation": 0.5}
        return lambda: TextQuality(TextQualityOptions(prune_percentile=40, weights=weights))


# -- registration and errors -------------------------------------------------------------------
def test_registered():
    registry = get_registry()
    assert registry.get("scorers", "text-quality") is TextQuality
    assert registry.get("language_models", "ngram") is NGramLM
    assert registry.get("language_models", "huggingface") is HuggingFaceLM


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("prune_percentile = 100", "prune_percentile"),
        ("weights = { stop_wrds = 1.0 }", "unknown filter"),
        ("weights = { stop_words = 0.0 }", "at least one weight"),
        ("weights = { stop_words = -1.0 }", ">= 0"),
        ("prune_percentil = 10", "did you mean 'prune_percentile'"),
        ('pos = "tagger"', "pos"),
    ],
)
def test_bad_options_in_a_config(tmp_path, options, message):
    path = tmp_path / "cur.toml"
    path.write_text(
        f'[study]\nname = "tq"\n[input]\npath = "{ALT_TEXTS}"\ntext = "TEXT"\n'
        f"[scorers.text-quality]\n{options}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_curate_config(path, get_registry())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"language_model": "gpt-17"}, "unknown language model 'gpt-17'"),
        ({"language_model_options": {"order": 5}}, "order"),
        ({"language_model_options": {"ordr": 2}}, "allowed keys: wordnet_dir"),
        ({"language_model_options": {"corpus": ["/no/such.txt"]}}, "/no/such.txt"),
        ({"language_model": "huggingface"}, "path"),
        (
            {"language_model": "huggingface", "language_model_options": {"path": "/no/model"}},
            "not a folder",
        ),
        ({"pos": "wordnet", "wordnet_dir": "/no/wordnet"}, "no WordNet index files"),
    ],
)
def test_bad_options_at_setup(options, message, tmp_path):
    scorer = TextQuality(TextQualityOptions(**options))
    with pytest.raises(ConfigError, match=message):
        scorer.setup(bare_context(tmp_path))


# -- the Hugging Face model, with a tiny random GPT-2 built here ---------------------------
@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 3, vocab_size=300, special_tokens=["<|endoftext|>"])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return folder, model, tokenizer


def test_huggingface_lm_matches_a_manual_computation(tiny_gpt2):
    import torch

    folder, model, tokenizer = tiny_gpt2
    lm = HuggingFaceLM(HuggingFaceOptions(path=str(folder), batch_size=2, device="cpu"))
    lm.setup()
    lines = ["a dog", "", "The lazy cat sleeps on the red sofa.", "x"]
    ll, tokens = lm.log_likelihood(lines)
    for line, got, n in zip(lines, ll, tokens, strict=True):
        ids = [tokenizer.bos_token_id, *tokenizer(line, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
        expected = sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))
        assert n == len(ids) - 1
        assert got == pytest.approx(expected, abs=1e-4), line
    assert np.isfinite(ll).all() and ll[0] < 0


def test_scorer_with_the_huggingface_lm(tiny_gpt2, alt_texts):
    folder, _, _ = tiny_gpt2
    options = TextQualityOptions(
        language_model="huggingface",
        language_model_options={"path": str(folder), "batch_size": 32},
        prune_percentile=10,
    )
    scorer = TextQuality(options)
    columns = run_scorer(scorer, chunked(alt_texts[:100], 64))
    summary = scorer.summary()
    assert summary["lm"]["lm"] == "huggingface" and math.isfinite(summary["ppl_all"])
    assert columns["keep"].sum() == 90


def test_curate_report_prints_each_weight_and_perplexity(tmp_path, capsys):
    """`platform curate` prints the scorer's summary: every filter's weight and PPL_i."""
    from autoplat.cli import main

    records = tmp_path / "alt.parquet"
    pq.write_table(pq.read_table(ALT_TEXTS).slice(0, 300), records)
    config = tmp_path / "tq.toml"
    config.write_text(
        f'[study]\nname = "tq"\n[input]\npath = "{records}"\ntext = "TEXT"\n'
        f'[output]\ndir = "{tmp_path / "out"}"\n[scorers.text-quality]\n'
    )
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["curate", str(config), "--storage", db]) == 0
    report = " ".join(capsys.readouterr().out.split())  # the table folds long cells
    assert re.search(r"ppl_all=[0-9.e+]+ lm_name=ngram weights=", report), report
    for name in FILTERS:
        assert re.search(rf"{name} [0-9.e-]+ \(ppl \d+\)", report), (name, report)
    assert f"view again with: platform show tq --storage {db}" in report  # the store it used
