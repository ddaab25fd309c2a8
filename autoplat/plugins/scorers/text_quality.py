"""``text-quality``: the text-quality score of Sharma et al. (2024), "Text Quality-Based
Pruning for Efficient Training of Language Models" (arXiv:2405.01582), and pruning of the
lowest-scoring records.

Each record is split into lines (on newlines; blank lines are skipped; an alt-text is
one line). Fourteen binary filters judge each line (``I_i(line)`` is 1 when it passes),
with the paper's Table 1 thresholds and strictness ("words" are whitespace-separated;
where a filter compares words, ``words_of``: lower-cased, outer punctuation stripped):

==================== =====================================================================
first_letter_caps    the first character is upper case
no_all_caps          not every cased character is upper case (``str.isupper`` is false)
word_repetition      fails when 1 - distinct/total over ``words_of`` is > 0.2 (0.2 passes)
digit_punctuation    fails when (digit + punctuation characters) / words is > 0.25 (0.25
                     passes); punctuation: Unicode P* or ASCII ``string.punctuation``
no_curly_brace       no ``{`` (code)
terminal_punctuation ends with ``.``, ``!``, ``?`` or ``"`` (the paper's four; not ``”``)
stop_words           at least 2 occurrences in ``words_of`` of the, be, to, of, and, that,
                     have, with
no_javascript        neither "javascript" nor "lorem ipsum" (any case)
token_count          more than 3 tokens (words, digit runs and symbols, ``TOKEN_RE``)
word_count           more than 3 and fewer than 256 words (4 to 255)
has_object           a parser object (see below)
has_noun             a noun or proper noun
has_determiner       a determiner (a, an, the, this, that, these, those, some, any, each,
                     every, no, another, either, neither, all, both)
text_complexity      an object linked to another noun ("complexity >= 1" of the CAT
                     filter, Radenovic et al. 2023, that the paper uses)
==================== =====================================================================

The last four need a part-of-speech tagger (``pos`` option). With spaCy and
``en_core_web_sm`` installed (``pos = "spacy"``, or ``"auto"`` finds it) they follow the
paper: an object is a token with dependency dobj/obj/pobj/iobj/dative/oprd, complexity
is an object with a noun among its ancestors. Otherwise (``"wordnet"``; what ``"auto"``
picks without spaCy) a lexicon tagger: closed-class words from fixed lists, other words
take the WordNet part of speech with the most sense-tagged uses (``index.*``, after
WordNet's morphological rules and exception lists), nudged by the previous word (after a
determiner/adjective/number: not a verb; after "to", a modal or a subject pronoun: a
verb); words WordNet lacks are nouns (proper nouns when capitalized), as a statistical
tagger mostly guesses. "has an object": a noun or object pronoun after a verb or
preposition with only determiners, adjectives, numbers, adverbs or possessives in
between; "complexity": such an object whose verb/preposition follows another noun
("dog on the beach", "photo of a dog"). Without WordNet (or ``pos = "none"``) the four
filters are dropped (weight 0) and ``summary()["pos"]`` says so.

Weights (eq. 1): ``w_i = max(0, (PPL_all - PPL_i) / PPL_all)`` where ``PPL_all`` is the
perplexity of the reference language model (``language_model``, a plugin; default
``ngram``) on all lines and ``PPL_i`` on the lines passing filter i. By default they are
estimated on a sample of at most ``lm_sample_lines`` lines: every line of the records
with the smallest per-record uniform draws (``record_uniform``), so the sample does not
depend on chunking; ``lm_sample_lines = 0`` scores every line in the first pass (exact
for ``ngram``; a batched neural LM's values then vary in the last digits with the
chunking, which may move records at the threshold). Or give
``weights = {filter = w, ...}`` (missing filters weigh 0) and no LM is loaded. When no
filter lowers the perplexity, every filter weighs 1 (reported as ``weights_fallback``).

Line score (eq. 2): ``sum_i w_i I_i / sum_i w_i``; record score (eq. 3): the mean of its
line scores weighted by their token counts (``TOKEN_RE`` tokens, whatever the LM; 0 for
a record without text). Pruning: the ``prune_percentile`` percent of records with the
lowest scores is dropped (exactly ``N * p / 100`` records, rounded half up; ties at the
threshold are broken by ``record_uniform`` of the record id, so the kept set does not
depend on chunking). The record score is linear
in the record's 14 token-weighted pass fractions, so the first pass writes those
(float32, 56 bytes a record) to the scorer's ``work_dir`` and ``finish_fit`` turns them
into one float per record in memory to find the threshold.

Columns: ``score`` (float32 in [0, 1]) and ``keep`` (bool). ``summary()`` gives
``ppl_all``, ``weights`` (one line for the curate report: each filter's weight and the
perplexity of the lines passing it, highest weight first) and ``filters`` (per filter:
weight, perplexity, pass rate).

Where this differs from the paper: the paper's reference LM is a pretrained Hugging Face
model and its parser spaCy; offline, the defaults are the ``ngram`` model (WordNet glosses
mixed with ``wordfreq`` frequencies) and the WordNet lexicon tagger above. The paper
states each threshold and its strictness (flag > 0.2, > 0.25; pass > 3 tokens, > 3 and
< 256 words) but not its units or tokenizer; ours: characters over whitespace words for
the digit/punctuation ratio, ``words_of`` for repetition and stop words, ``TOKEN_RE``
tokens for the token count (the paper does not name its tokenizer), case-insensitive
phrase matching.
"""

from __future__ import annotations

import logging
import math
import string
import unicodedata
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator

from autoplat.core.curation import record_uniform as _record_uniform
from autoplat.core.curation import state_value
from autoplat.core.errors import AutoplatError, ConfigError
from autoplat.core.interfaces import Chunk, CurationContext, Options, Scorer
from autoplat.plugins.scorers.language_models import (
    TOKEN_RE,
    WORDNET_DIR,
)

log = logging.getLogger(__name__)

FILTERS: tuple[str, ...] = (
    "first_letter_caps",
    "no_all_caps",
    "word_repetition",
    "digit_punctuation",
    "no_curly_brace",
    "terminal_punctuation",
    "stop_words",
    "no_javascript",
    "token_count",
    "word_count",
    "has_object",
    "has_noun",
    "has_determiner",
    "text_complexity",
)
POS_FILTERS = ("has_object", "has_noun", "has_determiner", "text_complexity")
BIT = {name: 1 << i for i, name in enumerate(FILTERS)}
ASCII_PUNCTUATION = string.punctuation

REPETITION_MAX = Fraction(1, 5)  # a line fails when its repetition ratio is > 0.2 (exact)
DIGIT_PUNCT_MAX = Fraction(1, 4)  # fails when (digit + punctuation characters) / words > 0.25
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
TERMINAL = frozenset('.!?"')
MIN_TOKENS_EXCLUSIVE = 3  # passes with more than 3 tokens
WORD_RANGE_EXCLUSIVE = (3, 256)  # passes with more than 3 and fewer than 256 words
FIXED_POINT = 2**20  # log-likelihoods are summed as integers of 2^-20 nats (exact, any order)


# -- the lexicon part-of-speech tagger --------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DETERMINERS = _words(
    "a an the this that these those some any each every no another either neither all both"
)
POSSESSIVES = _words("my your his her its our their whose")
SUBJECTS = _words("i you he she we they")
OBJECT_PRONOUNS = _words(
    "me you him her it us them something anything everything nothing someone anyone "
    "everyone myself yourself himself herself itself ourselves themselves"
)
PRONOUNS = SUBJECTS | OBJECT_PRONOUNS | _words("who whom what which mine yours hers ours")
PREPOSITIONS = _words(
    "of in on at by for with from to into onto over under above below between among through "
    "during before after without within along across behind beyond near around about against "
    "toward towards upon via per like despite inside outside off past since until till beside "
    "besides amid amongst throughout underneath beneath"
)
CONJUNCTIONS = _words(
    "and or but nor so yet if because while although though whether as when where unless than then"
)
AUXILIARIES = _words(
    "is am are was were be been being has have had having do does did will would shall "
    "should can could may might must 's 're 'm 've 'll 'd not n't"
)
MODALS = _words("will would shall should can could may might must do does did to")
ADVERBS = _words("here there now very too also just never always often again")
NUMBERS = _words(
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
    "hundred thousand million billion"
)
CLOSED: dict[str, str] = {
    **{w: "ADV" for w in ADVERBS},
    **{w: "NUM" for w in NUMBERS},
    **{w: "AUX" for w in AUXILIARIES},
    **{w: "CCONJ" for w in CONJUNCTIONS},
    **{w: "ADP" for w in PREPOSITIONS},
    **{w: "PRON" for w in PRONOUNS},
    **{w: "POSS" for w in POSSESSIVES},
    **{w: "DET" for w in DETERMINERS},
}

WN_POS = {"n": "NOUN", "v": "VERB", "a": "ADJ", "r": "ADV"}
WN_PREFERENCE = ("NOUN", "VERB", "ADJ", "ADV")  # ties
MORPH_RULES = {
    "n": (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y"), ("s", "")),
    "v": (("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
          ("ing", ""), ("s", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}  # fmt: skip


class WordNetLexicon:
    """Part of speech by WordNet's sense-tagged counts; see the module docstring."""

    def __init__(self, wordnet_dir: str | Path) -> None:
        root = Path(wordnet_dir)
        self.index: dict[str, dict[str, int]] = {p: {} for p in WN_POS}
        self.exceptions: dict[str, dict[str, list[str]]] = {p: {} for p in WN_POS}
        names = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
        for p, name in names.items():
            with open(root / f"index.{name}", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith(" "):
                        continue
                    parts = line.split()
                    if "_" in parts[0]:
                        continue
                    pointers = int(parts[3])
                    tagged = int(parts[5 + pointers])
                    senses = int(parts[2])
                    self.index[p][parts[0]] = tagged * 100 + min(senses, 99)
            exc = root / f"{name}.exc"
            if exc.is_file():
                for line in exc.read_text(encoding="utf-8", errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) >= 2:
                        self.exceptions[p][parts[0]] = parts[1:]
        self._cache: dict[str, dict[str, int]] = {}

    def candidates(self, word: str) -> dict[str, int]:
        """{tag: weight} of the parts of speech WordNet has for ``word`` (lower case)."""
        found = self._cache.get(word)
        if found is not None:
            return found
        found = {}
        for p, tag in WN_POS.items():
            index = self.index[p]
            weight = index.get(word)
            if weight is None:
                bases = list(self.exceptions[p].get(word, ()))
                bases += [word[: -len(s)] + r for s, r in MORPH_RULES[p] if word.endswith(s)]
                weights = [index[b] for b in bases if b and b in index]
                weight = max(weights) if weights else None
            if weight is not None:
                found[tag] = weight
        if len(self._cache) < 500_000:
            self._cache[word] = found
        return found

    def tag(self, tokens: list[str]) -> list[str]:
        tags: list[str] = []
        previous_tag, previous_word = "", ""
        for token in tokens:
            word = token.lower()
            tag = CLOSED.get(word)
            if tag is None:
                if token.isdigit():
                    tag = "NUM"
                elif not any(c.isalpha() for c in token):
                    tag = "PUNCT"
                else:
                    options = self.candidates(word)
                    if not options:
                        tag = "PROPN" if token[0].isupper() else "NOUN"
                    else:
                        if previous_tag in ("DET", "ADJ", "NUM", "POSS") and len(options) > 1:
                            options = {t: w for t, w in options.items() if t != "VERB"}
                        if "VERB" in options and (
                            previous_word in MODALS or previous_word in SUBJECTS
                        ):
                            tag = "VERB"
                        else:
                            tag = max(options, key=lambda t: (options[t], -WN_PREFERENCE.index(t)))
            tags.append(tag)
            previous_tag, previous_word = tag, word
        return tags


def lexicon_flags(tokens: list[str], tags: list[str]) -> tuple[bool, bool, bool, bool]:
    """(has_object, has_noun, has_determiner, text_complexity) from lexicon tags."""
    has_noun = any(t in ("NOUN", "PROPN") for t in tags)
    has_determiner = "DET" in tags
    has_object = complexity = False
    open_governor, noun_before_governor, seen_noun = False, False, False
    for token, tag in zip(tokens, tags, strict=True):
        is_object = tag in ("NOUN", "PROPN") or (tag == "PRON" and token.lower() in OBJECT_PRONOUNS)
        if tag in ("VERB", "ADP"):
            open_governor, noun_before_governor = True, seen_noun
        elif is_object:
            if open_governor:
                has_object = True
                complexity = complexity or noun_before_governor
                open_governor = False
        elif tag not in ("DET", "ADJ", "NUM", "ADV", "POSS"):
            open_governor = False
        seen_noun = seen_noun or tag in ("NOUN", "PROPN")
    return has_object, has_noun, has_determiner, complexity


_LEXICONS: dict[str, WordNetLexicon] = {}
SPACY_OBJECTS = frozenset({"dobj", "obj", "pobj", "iobj", "dative", "oprd"})


# -- the filters ----------------------------------------------------------------------------
def is_punctuation(char: str) -> bool:
    """Unicode punctuation (categories P*) or one of ASCII's ``string.punctuation``."""
    return char in ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def words_of(line: str) -> list[str]:
    """Whitespace-separated words, lower-cased, outer punctuation stripped, empty dropped."""
    stripped = (w.lower().strip(ASCII_PUNCTUATION + "“”‘’«»…–—") for w in line.split())
    return [w for w in stripped if w]


def surface_bits(line: str) -> tuple[int, list[str]]:
    """The bits of the ten filters that need no tagger, and the line's tokens."""
    tokens = TOKEN_RE.findall(line)
    words = line.split()
    lowered = words_of(line)
    bits = 0
    if line[0].isupper():
        bits |= BIT["first_letter_caps"]
    if not line.isupper():
        bits |= BIT["no_all_caps"]
    if len(lowered) - len(set(lowered)) <= REPETITION_MAX * len(lowered):
        bits |= BIT["word_repetition"]
    symbols = sum(1 for c in line if c.isdigit() or is_punctuation(c))
    if symbols <= DIGIT_PUNCT_MAX * len(words):
        bits |= BIT["digit_punctuation"]
    if "{" not in line:
        bits |= BIT["no_curly_brace"]
    if line[-1] in TERMINAL:
        bits |= BIT["terminal_punctuation"]
    if sum(1 for w in lowered if w in STOP_WORDS) >= 2:
        bits |= BIT["stop_words"]
    low = line.lower()
    if "javascript" not in low and "lorem ipsum" not in low:
        bits |= BIT["no_javascript"]
    if len(tokens) > MIN_TOKENS_EXCLUSIVE:
        bits |= BIT["token_count"]
    if WORD_RANGE_EXCLUSIVE[0] < len(words) < WORD_RANGE_EXCLUSIVE[1]:
        bits |= BIT["word_count"]
    return bits, tokens


def split_lines(text: str | None) -> list[str]:
    """A record's lines: split on newlines, stripped, blank ones dropped."""
    if not text:
        return []
    return [s for s in (part.strip() for part in text.splitlines()) if s]


# -- options --------------------------------------------------------------------------------
class TextQualityOptions(Options):
    """How much to prune, and where the filter weights come from."""

    prune_percentile: float = Field(
        20.0, ge=0, lt=100, description="percent of records with the lowest scores to drop"
    )
    weights: dict[str, float] | None = Field(
        None, description="filter weights; given, no language model is used (missing: 0)"
    )
    language_model: str = Field("ngram", min_length=1, description="a registered language model")
    language_model_options: dict[str, Any] = Field(default_factory=dict)
    lm_sample_lines: int = Field(
        100_000, ge=0, description="lines the weights are estimated on; 0: every line"
    )
    pos: Literal["auto", "spacy", "wordnet", "none"] = Field(
        "auto", description="part-of-speech source for the four parser filters"
    )
    wordnet_dir: str = Field(WORDNET_DIR, description="WordNet's dict folder (index.* files)")
    spacy_model: str = Field("en_core_web_sm", min_length=1)

    @field_validator("weights")
    @classmethod
    def _known_filters(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is None:
            return None
        unknown = sorted(set(weights) - set(FILTERS))
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; the filters are {', '.join(FILTERS)}")
        bad = [k for k, v in weights.items() if not (math.isfinite(v) and v >= 0)]
        if bad:
            raise ValueError(f"weights must be finite and >= 0 (see {bad})")
        if not any(v > 0 for v in weights.values()):
            raise ValueError("at least one weight must be > 0")
        return weights


# -- the scorer -----------------------------------------------------------------------------
class TextQuality(Scorer):
    """Sharma et al.'s perplexity-weighted line filters; prunes the lowest percentile."""

    name: ClassVar[str] = "text-quality"
    needs: ClassVar[tuple[str, ...]] = ("text",)
    two_pass: ClassVar[bool] = True
    Options: ClassVar[type[Options]] = TextQualityOptions
    LM_BATCH = 2048  # lines per language-model call
    SCORE_BLOCK = 1 << 20  # records per block when scoring the stored fractions

    def __init__(self, options: TextQualityOptions, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.lm = None
        self.lexicon: WordNetLexicon | None = None
        self.nlp = None
        self.pos_source = "none"
        self.pos_available = False
        self.fitted: dict[str, Any] | None = None

    # setup --------------------------------------------------------------------------
    def setup(self, context: CurationContext) -> None:
        self._setup_pos()
        if self.options.weights is None:
            self._setup_lm()
        self.work_dir = Path(context.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.features_path = self.work_dir / "text_quality_fractions.f32"
        self.ids_path = self.work_dir / "text_quality_ids.i64"
        self.records = 0
        self.lines = 0
        self.line_passes = np.zeros(len(FILTERS), dtype=np.int64)
        self.ll_sums = [0] * (len(FILTERS) + 1)  # fixed point; the last: all lines
        self.token_sums = [0] * (len(FILTERS) + 1)
        self.sample: dict[str, Any] = {"u": np.zeros(0), "id": np.zeros(0, np.int64),
                                       "j": np.zeros(0, np.int64), "bits": np.zeros(0, np.int64),
                                       "text": []}  # fmt: skip

    def _setup_pos(self) -> None:
        choice = self.options.pos
        if choice in ("auto", "spacy"):
            try:
                import spacy

                self.nlp = spacy.load(self.options.spacy_model, disable=["ner", "lemmatizer"])
                self.pos_source = f"spacy:{self.options.spacy_model}"
                self.pos_available = True
                return
            except Exception as exc:  # noqa: BLE001 - a missing or broken spaCy/model
                if choice == "spacy":
                    raise ConfigError(
                        f"text-quality: pos = 'spacy' but spaCy model "
                        f"'{self.options.spacy_model}' cannot be loaded ({exc}); install spaCy "
                        "and the model, or use pos = 'wordnet'"
                    ) from None
        if choice in ("auto", "wordnet"):
            root = Path(self.options.wordnet_dir)
            if all((root / f"index.{n}").is_file() for n in ("noun", "verb", "adj", "adv")):
                key = str(root.resolve())
                if key not in _LEXICONS:
                    _LEXICONS[key] = WordNetLexicon(root)
                self.lexicon = _LEXICONS[key]
                self.pos_source = "wordnet-lexicon"
                self.pos_available = True
                return
            if choice == "wordnet":
                raise ConfigError(
                    f"text-quality: pos = 'wordnet' but '{root}' has no WordNet index files; "
                    "install Debian's wordnet-base, set wordnet_dir, or use pos = 'none'"
                )
            log.warning(
                "text-quality: no spaCy model and no WordNet in %s: the filters %s are dropped",
                root,
                ", ".join(POS_FILTERS),
            )
        self.pos_source = "none (has_object, has_noun, has_determiner, text_complexity dropped)"

    def _setup_lm(self) -> None:
        from autoplat.core.registry import get_registry

        try:
            cls = get_registry().get("language_models", self.options.language_model)
        except AutoplatError as exc:
            raise ConfigError(f"text-quality: language_model: {exc}") from None
        try:
            options = cls.Options.model_validate(self.options.language_model_options)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(k) for k in err["loc"])
            raise ConfigError(
                f"text-quality: language_model_options for '{cls.name}': {where}: {err['msg']}; "
                f"allowed keys: {', '.join(cls.Options.model_fields)}"
            ) from None
        self.lm = cls(options, self.seed)
        self.lm.setup()

    # features -----------------------------------------------------------------------
    def _pos_bits(self, lines: list[str], tokens: list[list[str]]) -> list[int]:
        if self.nlp is not None:
            out = []
            for doc in self.nlp.pipe(lines, batch_size=256):
                objects = [t for t in doc if t.dep_ in SPACY_OBJECTS]
                flags = (
                    bool(objects),
                    any(t.pos_ in ("NOUN", "PROPN") for t in doc),
                    any(t.pos_ == "DET" for t in doc),
                    any(a.pos_ in ("NOUN", "PROPN") for o in objects for a in o.ancestors),
                )
                out.append(_flag_bits(flags))
            return out
        if self.lexicon is not None:
            return [_flag_bits(lexicon_flags(t, self.lexicon.tag(t))) for t in tokens]
        return [0] * len(lines)

    def analyse(self, texts: list[str | None]) -> dict[str, Any]:
        """Every non-blank line of ``texts``: its record, index, text, filter bits, tokens."""
        record, index, lines = [], [], []
        for r, text in enumerate(texts):
            for j, line in enumerate(split_lines(text)):
                record.append(r)
                index.append(j)
                lines.append(line)
        surface = [surface_bits(line) for line in lines]
        tokens = [t for _, t in surface]
        bits = np.asarray(
            [b | p for (b, _), p in zip(surface, self._pos_bits(lines, tokens), strict=True)],
            dtype=np.int64,
        )
        return {
            "record": np.asarray(record, dtype=np.int64),
            "j": np.asarray(index, dtype=np.int64),
            "lines": lines,
            "bits": bits,
            "tokens": np.asarray([len(t) for t in tokens], dtype=np.float64),
        }

    @staticmethod
    def fractions(analysed: dict[str, Any], n: int) -> np.ndarray:
        """Per record and filter: the token-weighted fraction of its lines passing (float32)."""
        record, tc, bits = analysed["record"], analysed["tokens"], analysed["bits"]
        total = np.bincount(record, weights=tc, minlength=n)
        safe = np.where(total > 0, total, 1.0)
        out = np.zeros((n, len(FILTERS)), dtype=np.float32)
        for i in range(len(FILTERS)):
            passing = np.bincount(record, weights=tc * ((bits >> i) & 1), minlength=n)
            out[:, i] = (passing / safe).astype(np.float32)
        return out

    @staticmethod
    def combine(fractions: np.ndarray, weights: list[float]) -> np.ndarray:
        """Record scores from float32 fractions, in one fixed order of operations."""
        total = math.fsum(weights)
        score = np.zeros(len(fractions), dtype=np.float64)
        for i, w in enumerate(weights):
            if w > 0:
                score = score + fractions[:, i].astype(np.float64) * w
        return score / total

    # first pass ---------------------------------------------------------------------
    def fit(self, chunk: Chunk) -> None:
        texts = list(chunk.text or [])
        n = len(chunk)
        if n == 0:
            return
        analysed = self.analyse(texts)
        ids = np.asarray(chunk.ids, dtype=np.int64)
        mode = "ab" if self.records else "wb"  # a first pass starts over (setup only reads)
        with open(self.features_path, mode) as handle:
            handle.write(self.fractions(analysed, n).tobytes())
        with open(self.ids_path, mode) as handle:
            handle.write(ids.tobytes())
        self.records += n
        bits = analysed["bits"]
        self.lines += len(bits)
        self.line_passes += np.asarray([int(((bits >> i) & 1).sum()) for i in range(len(FILTERS))])
        if self.lm is None or not len(bits):
            return
        if self.options.lm_sample_lines == 0:
            self._accumulate(analysed["lines"], bits)
            return
        line_ids = ids[analysed["record"]]
        sample = self.sample
        sample["u"] = np.concatenate([sample["u"], record_uniform(self.seed, line_ids)])
        sample["id"] = np.concatenate([sample["id"], line_ids])
        sample["j"] = np.concatenate([sample["j"], analysed["j"]])
        sample["bits"] = np.concatenate([sample["bits"], bits])
        sample["text"].extend(analysed["lines"])
        if len(sample["u"]) > 2 * self.options.lm_sample_lines:
            self._trim_sample()

    def _trim_sample(self) -> None:
        """Keep the ``lm_sample_lines`` lines first in (uniform, id, line) order, sorted."""
        s = self.sample
        order = np.lexsort((s["j"], s["id"], s["u"]))[: self.options.lm_sample_lines]
        for key in ("u", "id", "j", "bits"):
            s[key] = s[key][order]
        s["text"] = [s["text"][i] for i in order]

    def _accumulate(self, lines: list[str], bits: np.ndarray) -> None:
        for start in range(0, len(lines), self.LM_BATCH):
            ll, tokens = self.lm.log_likelihood(lines[start : start + self.LM_BATCH])
            ll_fixed = np.round(np.asarray(ll, dtype=np.float64) * FIXED_POINT).astype(np.int64)
            tokens = np.asarray(tokens, dtype=np.int64)
            part = bits[start : start + self.LM_BATCH]
            for i in range(len(FILTERS)):
                mask = ((part >> i) & 1).astype(bool)
                self.ll_sums[i] += int(ll_fixed[mask].sum())
                self.token_sums[i] += int(tokens[mask].sum())
            self.ll_sums[-1] += int(ll_fixed.sum())
            self.token_sums[-1] += int(tokens.sum())

    def _weights_from_lm(self) -> tuple[list[float], dict[str, Any]]:
        if self.options.lm_sample_lines > 0 and len(self.sample["u"]):
            self._trim_sample()
            self._accumulate(self.sample["text"], self.sample["bits"])
        self.sample["text"] = []

        def ppl(i: int) -> float | None:
            tokens = self.token_sums[i]
            return math.exp(-self.ll_sums[i] / FIXED_POINT / tokens) if tokens else None

        ppl_all = ppl(-1)
        per_filter = {name: ppl(i) for i, name in enumerate(FILTERS)}
        weights = []
        for name in FILTERS:
            p = per_filter[name]
            usable = ppl_all is not None and p is not None and self._filter_available(name)
            weights.append(max(0.0, (ppl_all - p) / ppl_all) if usable else 0.0)
        info = {
            "ppl_all": ppl_all,
            "ppl": per_filter,
            "lm_lines": len(self.sample["u"]) if self.options.lm_sample_lines else self.lines,
            "lm_tokens": self.token_sums[-1],
        }
        return weights, info

    def _filter_available(self, name: str) -> bool:
        return name not in POS_FILTERS or self.pos_available

    def finish_fit(self) -> None:
        stats: dict[str, Any] = {"lm": None, "ppl_all": None}
        if self.options.weights is not None:
            given = self.options.weights
            weights = [
                float(given.get(n, 0.0)) if self._filter_available(n) else 0.0 for n in FILTERS
            ]
            stats["weights_source"] = "config"
        else:
            weights, info = self._weights_from_lm()
            stats.update(info, weights_source="language model")
            stats["lm"] = getattr(self.lm, "info", {"lm": self.lm.name})
        if not any(w > 0 for w in weights):
            weights = [1.0 if self._filter_available(n) else 0.0 for n in FILTERS]
            stats["weights_fallback"] = "uniform: no filter lowered the perplexity"
        n = self.records
        scores = np.zeros(n)
        ids = np.zeros(0, np.int64)
        if n:  # one float per record in memory; the fractions are read block by block
            fractions = np.memmap(
                self.features_path, dtype=np.float32, mode="r", shape=(n, len(FILTERS))
            )
            for start in range(0, n, self.SCORE_BLOCK):
                block = np.asarray(fractions[start : start + self.SCORE_BLOCK])
                scores[start : start + len(block)] = self.combine(block, weights)
            del fractions
            ids = np.memmap(self.ids_path, dtype=np.int64, mode="r", shape=(n,))
        n_prune = min(n, math.floor(n * self.options.prune_percentile / 100 + 0.5))
        threshold = None
        if n_prune:
            s_t = float(np.partition(scores, n_prune - 1)[n_prune - 1])
            below = int((scores < s_t).sum())
            tied = np.asarray(ids[scores == s_t])
            order = np.lexsort((tied, record_uniform(self.seed, tied)))
            last = tied[order[n_prune - below - 1]]
            u_last = float(record_uniform(self.seed, np.asarray([last]))[0])
            threshold = (s_t, u_last, int(last))
        del ids
        for path in (self.features_path, self.ids_path):
            path.unlink(missing_ok=True)
        stats.update(
            records=n,
            lines=self.lines,
            pos=self.pos_source,
            pass_rate={
                name: (int(c) / self.lines if self.lines else None)
                for name, c in zip(FILTERS, self.line_passes, strict=True)
            },
            kept_fraction=(n - n_prune) / n if n else None,
            score_threshold=threshold[0] if threshold else None,
            mean_score=float(scores.mean()) if n else None,
        )
        if not self.pos_available:
            stats["dropped_filters"] = list(POS_FILTERS)
        self.fitted = {"weights": weights, "threshold": threshold, "stats": stats}

    # scoring ------------------------------------------------------------------------
    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        if self.fitted is None:
            raise RuntimeError("text-quality: score() before finish_fit() or load_state()")
        n = len(chunk)
        if n == 0:
            return {"score": np.zeros(0, np.float32), "keep": np.zeros(0, bool)}
        fractions = self.fractions(self.analyse(list(chunk.text or [])), n)
        scores = self.combine(fractions, self.fitted["weights"])
        threshold = self.fitted["threshold"]
        if threshold is None:
            keep = np.ones(n, dtype=bool)
        else:
            s_t, u_t, id_t = threshold
            ids = np.asarray(chunk.ids, dtype=np.int64)
            u = record_uniform(self.seed, ids)
            keep = (scores > s_t) | ((scores == s_t) & ((u > u_t) | ((u == u_t) & (ids > id_t))))
        return {"score": scores.astype(np.float32), "keep": keep}

    def state(self) -> Any:
        return self.fitted

    def load_state(self, state: Any) -> None:
        weights = state_value(state, "weights", list | tuple)
        if len(weights) != len(FILTERS) or not all(_is_number(w) for w in weights):
            raise ValueError(f"'weights' is not a list of {len(FILTERS)} numbers")
        threshold = state_value(state, "threshold", list | tuple | None)
        if threshold is not None and (len(threshold) != 3 or not all(map(_is_number, threshold))):
            raise ValueError("'threshold' is not [score, draw, record id]")
        stats = state_value(state, "stats", dict)
        if set(state_value(stats, "pass_rate", dict)) != set(FILTERS):
            raise ValueError("'stats.pass_rate' does not hold a pass rate per filter")
        if "lm" not in (state_value(stats, "lm", dict | None) or {"lm": None}):
            raise ValueError("'stats.lm' names no language model")
        for key in ("kept_fraction", "score_threshold", "mean_score", "ppl_all", "pos"):
            state_value(stats, key, object)
        self.fitted = {
            "weights": [float(w) for w in weights],
            "threshold": None if threshold is None else (*map(float, threshold[:2]), threshold[2]),
            "stats": stats,
        }

    def summary(self) -> dict[str, Any]:
        if self.fitted is None:
            return {"pos": self.pos_source}
        stats = dict(self.fitted["stats"])
        ppl = stats.pop("ppl", None) or {}
        rates = stats.pop("pass_rate")
        lm = stats.pop("lm")
        filters = {
            name: {"weight": w, "ppl": ppl.get(name), "pass_rate": rates[name]}
            for name, w in zip(FILTERS, self.fitted["weights"], strict=True)
        }
        summary = {key: stats.pop(key) for key in ("kept_fraction", "ppl_all")}
        summary["lm_name"] = lm["lm"] if lm else None
        summary["weights"] = weights_text(filters)
        for key in ("score_threshold", "mean_score", "pos"):
            summary[key] = stats.pop(key)
        summary["prune_percentile"] = self.options.prune_percentile
        summary.update(stats)
        summary["lm"] = lm
        summary["filters"] = filters
        return _json_safe(summary)


def weights_text(filters: dict[str, dict[str, Any]]) -> str:
    """One line for a report: each filter's weight and the perplexity of its passing lines."""

    def entry(name: str) -> str:
        f = filters[name]
        ppl = "-" if f["ppl"] is None or not math.isfinite(f["ppl"]) else f"{f['ppl']:.0f}"
        return f"{name} {f['weight']:.3g} (ppl {ppl})"

    order = sorted(filters, key=lambda name: -filters[name]["weight"])
    return "; ".join(entry(name) for name in order)


def record_uniform(seed: int, ids: np.ndarray) -> np.ndarray:
    """``autoplat.core.curation.record_uniform`` without its uint64 wrap-around warning."""
    with np.errstate(over="ignore"):
        return _record_uniform(seed, ids)


def _flag_bits(flags: tuple[bool, bool, bool, bool]) -> int:
    return sum(BIT[name] for name, on in zip(POS_FILTERS, flags, strict=True) if on)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
