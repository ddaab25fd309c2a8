"""MetaCLIP curation: match captions against metadata entries, then balance.

The scorer ``metaclip`` follows Xu et al., "Demystifying CLIP Data" (MetaCLIP, 2023):

1. **Substring matching.** A caption is *spaced* exactly as MetaCLIP's
   ``substr_matching.py`` does it: padded with a space at both ends, a space put on
   both sides of every ``, . ; : ? ! ``` (MetaCLIP's list, which includes the
   backtick), and tab, newline and carriage return turned into spaces. An entry
   matches when ``" " + entry + " "`` occurs in the spaced caption; the test is
   case-sensitive, and an entry counts once per caption however often it occurs.
   Overlapping entries all match: in "a b c" both "a b" and "b c" match (they share
   the space between them). Instead of MetaCLIP's loop over every entry
   (``reference_match``, ~0.3 s per caption for 500,000 entries) a hash table of the
   entries' token sequences looks up every run of tokens of a whole chunk at once (see
   ``Matcher``).
2. **Counting (first pass).** ``fit`` counts, per entry, the captions of the whole
   corpus it matches.
3. **Balancing (second pass).** With the threshold ``t``, an entry matched by
   ``count <= t`` captions keeps every one of them; a *head* entry (``count > t``)
   keeps each with probability ``t / count``. A caption is kept when ANY of its
   matched entries keeps it, and a caption that matches no entry is dropped (both as
   in MetaCLIP). The draw for (caption, entry) is ``record_uniform(seed,
   id * len(entries) + entry)``: one uniform per pair, keyed on the caption's global
   row number, so the result does not depend on chunking or on which other entries
   matched.

Options (a ``[scorers.metaclip]`` section): ``metadata`` (a JSON array of
entries) or ``wordnet = true`` (build the list with ``build_metadata``, at most
``max_entries`` entries); ``t``. The default ``t = 100`` is scaled down from the
paper's 20,000, which was chosen for a 1.6B-pair pool curated to 400M (2.5B pairs
used 170,000): at 20,000 a corpus of fewer than tens of millions of captions has no
head entry, so balancing would do nothing. On the 10,000 alt-texts of
``examples/data`` with the 500,000 built entries, t = 100 makes the 36 entries matched
>= 100 times head entries (of, the, and, with, Stock, Photo, Black, ...); the most
frequent one, "of", is matched ~1,000 times. Raise ``t`` with the corpus (roughly the
count where the long tail starts). Note that with a 500k-entry list nearly every
caption also matches some tail entry, so on small corpora balancing drops few
captions; most drops are captions that match no entry at all.

Columns: ``matches`` (number of distinct entries matched), ``min_count`` (the corpus
count of the rarest matched entry; 0 without a match) and ``keep``.

The metadata builder (``build_metadata``; ``platform metaclip-metadata --out
entries.json``) approximates MetaCLIP's 500,000 entries offline; see its docstring.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
from collections import Counter
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from autoplat.core.curation import (
    Chunk,
    CurationContext,
    Scorer,
    record_uniform,
    state_array,
    state_value,
)
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import Options
from autoplat.plugins.scorers.metaclip_command import DEFAULT_MAX_ENTRIES, WORDNET_DIR

log = logging.getLogger(__name__)

PUNCTUATION = (",", ".", ";", ":", "?", "!", "`")  # wrapped in spaces (MetaCLIP's list)
TO_SPACE = ("\t", "\n", "\r")  # turned into spaces
SEPARATOR = "\x00"  # between the captions of a chunk in one scanned string
DEFAULT_T = 100
_BASE = np.uint64(0x100000001B3)  # a run's hash: h(t1) * B^(k-1) + ... + h(tk), mod 2^64
_MASK64 = (1 << 64) - 1
_MIX = np.uint64(0x9E3779B97F4A7C15)  # spreads keys over the table's slots


# -- matching ---------------------------------------------------------------------------
def spacing(text: str) -> str:
    """A caption as MetaCLIP matches it: padded, punctuation spaced, tabs/newlines spaced."""
    spaced = f" {text} "
    for punct in PUNCTUATION:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in TO_SPACE:
        spaced = spaced.replace(char, " ")
    return spaced


def reference_matcher(entries: list[str]) -> Callable[[str], list[int]]:
    """MetaCLIP's ``substr_matching`` in plain Python: text -> indices of matched entries.

    The entries are spaced once, then every one is looked for in the spaced text
    (~0.1 s per caption with 500,000 entries; for tests and benchmarks).
    """
    spaced_entries = [f" {entry} " for entry in entries]

    def match(text: str) -> list[int]:
        spaced = spacing(text)
        return [i for i, entry in enumerate(spaced_entries) if entry in spaced]

    return match


def reference_match(text: str, entries: list[str]) -> list[int]:
    """``reference_matcher(entries)(text)``: one caption."""
    return reference_matcher(entries)(text)


class _Table:
    """An open-addressing (linear probing) hash table of uint64 keys -> int64 values, built
    and queried with numpy, many keys at a time. Key 0 marks an empty slot; a slot holds
    its key and value side by side (one cache line read per probe)."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        bits = max(4, int(np.ceil(np.log2(max(len(keys), 1) * 2))))  # load factor <= 1/2
        self.shift, self.mask = np.uint64(64 - bits), np.uint64((1 << bits) - 1)
        self.slots = np.zeros((1 << bits, 2), np.uint64)  # (key, value)
        at, todo = self._home(keys), np.arange(len(keys))
        while len(todo):  # each round, the first key aiming at a free slot takes it
            free = self.slots[at[todo], 0] == 0
            taken, first = np.unique(at[todo[free]], return_index=True)
            winners = todo[free][first]
            self.slots[taken, 0] = keys[winners]
            self.slots[taken, 1] = values[winners].astype(np.uint64)
            todo = np.setdiff1d(todo, winners, assume_unique=True)
            at[todo] = (at[todo] + np.uint64(1)) & self.mask

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return (keys * _MIX) >> self.shift

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key (values must be >= 0), -1 where it is absent."""
        at = self._home(keys)
        probe = self.slots[at]
        out = np.where(probe[:, 0] == keys, probe[:, 1].astype(np.int64), -1)
        todo = np.flatnonzero((probe[:, 0] != keys) & (probe[:, 0] != 0))
        while len(todo):  # collisions: the next slots
            at[todo] = (at[todo] + np.uint64(1)) & self.mask
            probe = self.slots[at[todo]]
            hit = probe[:, 0] == keys[todo]
            out[todo[hit]] = probe[hit, 1].astype(np.int64)
            todo = todo[~hit & (probe[:, 0] != 0)]
        return out


def _window_hashes(token_hashes: np.ndarray) -> np.ndarray:
    """The hash of a token sequence from its tokens' hashes (rows), never 0 (empty slot)."""
    h = token_hashes[:, 0].copy()
    for j in range(1, token_hashes.shape[1]):
        h = h * _BASE + token_hashes[:, j]
    h[h == 0] = 1
    return h


class Matcher:
    """Every (caption, entry) match of a list of captions, by hashing token sequences.

    A spaced caption split at its spaces (``spaced.split(" ")``) is a list of tokens, and
    ``" entry "`` occurs in it exactly when ``entry.split(" ")`` equals a run of
    consecutive tokens with a space on both sides (not the first or the last token):
    the entry's spaces must fall on the caption's. So matching is a lookup of token
    runs: every token is hashed (Python's string hash), a run's hash is a polynomial of
    its tokens' hashes, and one numpy hash table holds the hash of every entry and of
    every proper prefix of a multi-word entry. All runs of one token are looked up at
    once; a run is extended by one token only while it is a prefix of some entry, so
    the few longer runs cost little. Every hit is then checked by comparing strings, so
    a hash collision can never add a match, and entries sharing a hash (duplicates in
    the list included) are each checked: the result is exactly MetaCLIP's.

    ``match`` joins a chunk's captions as ``" c0 \\0 c1 \\0 ... cn "`` and spaces the
    whole string at once (the spacing is character-local, so each segment between NULs
    is exactly ``spacing(ci)``); the NUL tokens map runs to captions. A run cannot span
    a NUL token because no entry holds a NUL; when an entry or a caption does hold
    one, captions are matched one by one instead (same result, slower). Everything
    but the hashing, the string checks and the split runs in numpy, a chunk at a time.
    """

    def __init__(self, entries: list[str]) -> None:
        self.entries = entries
        split = [entry.split(" ") for entry in entries]
        lengths = np.fromiter(map(len, split), np.int64, len(split))
        self.longest = int(lengths.max()) if len(split) else 0
        flat = chain.from_iterable(split)
        hashes = np.fromiter(map(hash, flat), np.int64, int(lengths.sum())).view(np.uint64)
        starts = np.cumsum(lengths) - lengths
        keys, codes = [], []  # code 2 * (entry + 1) + (1 if a proper prefix)
        h = np.zeros(len(entries), np.uint64)
        for j in range(self.longest):
            rows = np.flatnonzero(lengths > j)
            h[rows] = h[rows] * _BASE + hashes[starts[rows] + j]
            done = lengths[rows] == j + 1
            keys += [h[rows[done]], h[rows[~done]]]
            codes += [2 * (rows[done] + 1), np.ones((~done).sum(), np.int64)]
        keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        keys[keys == 0] = 1
        codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        self._build(keys, codes)
        self._joinable = not any(SEPARATOR in entry for entry in entries)

    def _build(self, keys: np.ndarray, codes: np.ndarray) -> None:
        """The table: per distinct hash, its entry (or a bucket of several) and a flag."""
        order = np.argsort(keys, kind="stable")
        keys, codes = keys[order], codes[order]
        distinct, first, counts = np.unique(keys, return_index=True, return_counts=True)
        prefix = np.bitwise_or.reduceat(codes & 1, first) if len(keys) else codes
        entry = codes >> 1  # entry + 1, 0 for a prefix
        per_key = np.add.reduceat((entry > 0).astype(np.int64), first) if len(keys) else codes
        value = np.maximum.reduceat(entry, first) if len(keys) else codes
        self.buckets: list[list[int]] = []
        for at in np.flatnonzero(per_key > 1):  # several entries, one hash: check each
            group = entry[first[at] : first[at] + counts[at]]
            value[at] = len(self.entries) + 1 + len(self.buckets)
            self.buckets.append(sorted(int(e) - 1 for e in group if e > 0))
        self.table = _Table(distinct, 2 * value + prefix)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(caption, entry)`` index pairs, each pair once, sorted by caption then entry."""
        if not texts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self._joinable:
            spaced = spacing(f" {SEPARATOR} ".join(texts))
            if spaced.count(SEPARATOR) == len(texts) - 1:  # no caption holds a NUL
                return self._unique(*self._find(spaced, joined=True))
        parts = [self._find(spacing(text), joined=False)[1] for text in texts]
        captions = np.repeat(np.arange(len(texts)), [len(p) for p in parts])
        return self._unique(captions, np.concatenate(parts))

    def _find(self, spaced: str, joined: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(caption, entry)`` of every match in a spaced string, duplicates included.

        ``joined``: the string holds captions separated by NUL tokens (caption = NUL
        tokens before the match); otherwise it is one caption (caption 0). Runs of one
        token are looked up and checked once per distinct token.
        """
        tokens = spaced.split(" ")
        index = dict(zip(dict.fromkeys(tokens), range(len(tokens)), strict=False))  # distinct
        ids = np.fromiter(map(index.__getitem__, tokens), np.int64, len(tokens))
        words = list(index)
        hashes = np.fromiter(map(hash, words), np.int64, len(words)).view(np.uint64)
        value = self.table.get(np.where(hashes == 0, np.uint64(1), hashes))
        last = len(tokens) - 2  # runs lie within tokens 1 .. last
        inner = ids[1 : last + 1]
        entry_of, extra = self._check_words(words, value)
        at = [1 + np.flatnonzero(entry_of[inner] >= 0)]
        entries = [entry_of[ids[at[0]]]]
        for word, entry in extra:  # a token that is several entries (duplicates)
            at.append(1 + np.flatnonzero(inner == word))
            entries.append(np.full(len(at[-1]), entry))
        starts = 1 + np.flatnonzero((value[inner] & 1 == 1) & (value[inner] >= 0))
        starts = starts[starts + 1 <= last]
        h = hashes[ids[starts]]
        for length in range(2, self.longest + 1):
            if not len(starts):
                break
            h = h * _BASE + hashes[ids[starts + length - 1]]
            found = self.table.get(np.where(h == 0, np.uint64(1), h))
            hit = np.flatnonzero(found >= 2)
            for i, code in zip(starts[hit].tolist(), (found[hit] >> 1).tolist(), strict=True):
                run = " ".join(tokens[i : i + length])
                for entry in self._candidates(code):
                    if self.entries[entry] == run:  # not a hash collision
                        at.append(np.array([i]))
                        entries.append(np.array([entry]))
            grow = (found >= 0) & (found & 1 == 1) & (starts + length <= last)
            starts, h = starts[grow], h[grow]
        at, entries = np.concatenate(at), np.concatenate(entries)
        if not joined or SEPARATOR not in index:
            return np.zeros(len(at), np.int64), entries
        return np.searchsorted(np.flatnonzero(ids == index[SEPARATOR]), at), entries

    def _candidates(self, code: int) -> list[int]:
        """The entries of a table code (one, or a bucket of several sharing a hash)."""
        n = len(self.entries)
        return self.buckets[code - n - 1] if code > n else [code - 1]

    def _check_words(
        self, words: list[str], value: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Per distinct token, the entry it is (-1: none), checked by comparing strings;
        and ``(token, entry)`` for tokens that are several entries."""
        code = np.where(value >= 2, value >> 1, 0)
        one = np.flatnonzero((code >= 1) & (code <= len(self.entries)))
        same = map(
            operator.eq,
            map(words.__getitem__, one.tolist()),
            map(self.entries.__getitem__, (code[one] - 1).tolist()),
        )
        ok = one[np.fromiter(same, bool, len(one))]
        entry_of = np.full(len(words), -1, np.int64)
        entry_of[ok] = code[ok] - 1
        extra = []
        for word in np.flatnonzero(code > len(self.entries)).tolist():
            matches = [
                e for e in self._candidates(int(code[word])) if self.entries[e] == words[word]
            ]
            entry_of[word] = matches[0] if matches else -1
            extra += [(word, e) for e in matches[1:]]
        return entry_of, extra

    def _unique(self, captions: np.ndarray, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = max(len(self.entries), 1)
        keys = np.sort(captions.astype(np.int64) * size + entries)
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        return keys // size, keys % size


# -- metadata ---------------------------------------------------------------------------
def load_metadata(path: Path) -> list[str]:
    """A JSON array of entries; ``ConfigError`` naming the file and the bad item otherwise.

    Duplicates are dropped (the first one kept, with a warning); an empty or
    whitespace-only entry is refused (``" " + "" + " "`` would match any double space).
    """
    fix = (
        'give a JSON array of strings, e.g. ["dog", "hot dog"] (make one with '
        "`platform metaclip-metadata --out entries.json`)"
    )
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"metaclip metadata file {path} {what}; check the scorer's 'metadata'")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"metaclip metadata file {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"metaclip metadata file {path}: invalid JSON at line {exc.lineno} column "
            f"{exc.colno} ({exc.msg}); {fix}"
        ) from None
    if not isinstance(entries, list):
        raise ConfigError(
            f"metaclip metadata file {path}: holds a JSON {type(entries).__name__}, "
            f"not an array; {fix}"
        )
    if not entries:
        raise ConfigError(f"metaclip metadata file {path}: the array is empty; {fix}")
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ConfigError(
                f"metaclip metadata file {path}: item {index} is {json.dumps(entry)[:60]}, "
                f"not a string; {fix}"
            )
        if not entry.strip():
            raise ConfigError(
                f"metaclip metadata file {path}: item {index} is empty or only spaces; "
                "remove it (it would match every double space)"
            )
    unique = list(dict.fromkeys(entries))
    if len(unique) < len(entries):
        log.warning(
            "metaclip metadata file %s: dropped %d duplicate entries",
            path,
            len(entries) - len(unique),
        )
    return unique


_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")  # letters, inner ' or -: no digits
_GLOSS_TOKEN = re.compile(r"[A-Za-z](?:[A-Za-z'\-]*[A-Za-z])?|[;\"()`,.:?!|]")
_BLOCKED = re.compile(r"[,.;:?!`\t\n\r]")  # such an entry can never match a spaced caption


def _wordnet(wordnet_dir: Path) -> tuple[list[str], Counter, Counter]:
    """WordNet's lemmas (case kept, ``_`` as space) and the uni/bigram counts of its glosses.

    A bigram is two words next to each other in a gloss or example sentence, with no
    punctuation between them.
    """
    lemmas: list[str] = []
    glosses: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                fields = line.split(" ")
                count = int(fields[3], 16)
                for word in fields[4 : 4 + 2 * count : 2]:
                    word = re.sub(r"\((?:a|p|ip)\)$", "", word)  # adjective position markers
                    lemmas.append(word.replace("_", " "))
                glosses.append(line.partition(" | ")[2])
    tokens = _GLOSS_TOKEN.findall("|".join(glosses))  # punctuation tokens break bigrams
    unigrams = Counter(tokens)
    bigrams = Counter(zip(tokens, tokens[1:], strict=False))
    return list(dict.fromkeys(lemmas)), unigrams, bigrams


def _pmi_bigrams(
    unigrams: Counter, bigrams: Counter, min_count: int, min_pmi: float, common: set[str]
) -> list[str]:
    """Adjacent word pairs seen ``min_count`` times with PMI >= ``min_pmi``, best first.

    A pair with a word of ``common`` (function words) is left out ("similar to").
    """
    total = sum(n for word, n in unigrams.items() if word[0].isalpha())
    scored = []
    for (a, b), count in bigrams.items():
        if (
            count >= min_count
            and a[0].isalpha()
            and b[0].isalpha()
            and a.lower() not in common
            and b.lower() not in common
        ):
            pmi = math.log(count * total / (unigrams[a] * unigrams[b]))
            if pmi >= min_pmi:
                scored.append((-pmi, -count, f"{a} {b}"))
    return [phrase for _, _, phrase in sorted(scored)]


def _frequency_function():
    """``entry -> frequency`` as wordfreq estimates it; a phrase: ``1 / sum(1 / f(word))``."""
    import wordfreq

    freqs: dict[str, float] = wordfreq.get_frequency_dict("en")

    def frequency(entry: str) -> float:
        if " " not in entry:
            return freqs.get(entry.lower(), 0.0)
        inverse = 0.0
        for token in entry.lower().split():
            f = freqs.get(token, 0.0)
            if f <= 0:
                return 0.0  # an unknown word
            inverse += 1.0 / f
        return 1.0 / inverse if inverse else 0.0

    return frequency


def metadata_sources(wordnet_dir: Path | str | None = WORDNET_DIR) -> dict[str, list[str]]:
    """The candidate entries by source, in source order, before deduplication.

    See ``build_metadata``. ``wordnet_dir`` None (or a folder without WordNet's
    ``data.*`` files, with a warning) uses wordfreq only.
    """
    import wordfreq

    sources: dict[str, list[str]] = {}
    folder = Path(wordnet_dir) if wordnet_dir is not None else None
    parts = ("noun", "verb", "adj", "adv")
    if folder is not None and not all((folder / f"data.{p}").is_file() for p in parts):
        log.warning(
            "WordNet not found in %s (no data.noun/verb/adj/adv): building the MetaCLIP metadata "
            "from wordfreq only. Install Debian's wordnet-base (apt-get install wordnet-base) "
            "for WordNet lemmas and phrases",
            folder,
        )
        folder = None
    lemmas: list[str] = []
    if folder is not None:
        lemmas, gloss_unigrams, gloss_bigrams = _wordnet(folder)
        sources["wordnet"] = lemmas
    unigrams = [w for w in wordfreq.top_n_list("en", 10**7) if _WORD.fullmatch(w)]
    sources["wordfreq-unigrams"] = unigrams
    if folder is not None:
        common = set(wordfreq.top_n_list("en", 100))
        sources["gloss-bigrams"] = _pmi_bigrams(gloss_unigrams, gloss_bigrams, 5, 5.0, common)
    # first letter upper-cased, as Wikipedia titles and sentence-initial words are
    titles = {entry[:1].upper() + entry[1:]: None for entry in chain(lemmas, unigrams)}
    sources["capitalized"] = list(titles)
    return {
        name: [e for e in entries if not _BLOCKED.search(e) and e.strip()]
        for name, entries in sources.items()
    }


def build_metadata(
    max_entries: int = DEFAULT_MAX_ENTRIES,
    wordnet_dir: Path | str | None = WORDNET_DIR,
    counts: dict[str, int] | None = None,
) -> list[str]:
    """An offline stand-in for MetaCLIP's 500,000 metadata entries.

    MetaCLIP's list (not downloadable here) is: WordNet synsets (86,654), Wikipedia
    unigrams seen >= 100 times (251,465), Wikipedia bigrams with high pointwise mutual
    information (100,646) and the titles of the most viewed Wikipedia articles
    (61,235). This draws on four offline sources:

    1. ``wordnet``: every lemma of WordNet 3.0 (Debian's ``wordnet-base``, parsed from
       ``data.noun/verb/adj/adv``; ``_`` becomes a space, case is kept): ~148k
       words, multi-word phrases and proper names. MetaCLIP took synset names only;
       all lemmas mirror it more fully.
    2. ``wordfreq-unigrams``: every alphabetic word of wordfreq's English list (~312k,
       down to a frequency of ~1e-8, i.e. also rarer words than Wikipedia's >= 100
       occurrences). wordfreq folds case, so these are lower case.
    3. ``gloss-bigrams``: adjacent word pairs in WordNet's glosses and examples (1.5M
       words) seen >= 5 times with PMI >= 5 and no function word (~4k). Without a
       Wikipedia-sized corpus this is far fewer than MetaCLIP's 100k PMI bigrams;
       WordNet's 64k multi-word lemmas (source 1) cover common bigrams instead.
    4. ``capitalized``: sources 1 and 2 with the first letter upper-cased (the form of
       Wikipedia titles, and of case-sensitive Wikipedia unigrams at the start of a
       sentence or in a name). There are no article titles offline; WordNet's proper
       names (in 1) cover some.

    The list is sources 1-3 (deduplicated), most frequent first, then capitalized
    forms not yet in it, most frequent first, cut at ``max_entries``: the default
    500,000 holds all of 1-3 (~415k) and the ~86k most frequent capitalized forms; a
    small ``max_entries`` gives the most frequent words and phrases. Frequencies are
    wordfreq's; a phrase scores as wordfreq estimates it, ``1 / sum(1 / f)`` over its
    words (0 with an unknown word; ties keep the source order). All four sources give
    ~783k entries. Without WordNet (``wordnet_dir`` None, or no ``data.*`` files
    there: a warning is logged) sources 2 and 4 give ~623k.

    Entries holding ``, . ; : ? !``` or a tab/newline are dropped: a spaced caption
    always has spaces around those, so such an entry could never match. ``counts``,
    when given, receives how many entries of the list came from each source (an entry
    in several counts for the first). Nothing is cached on disk.
    """
    if max_entries < 1:
        raise ConfigError(f"max_entries must be at least 1, got {max_entries}")
    sources = metadata_sources(wordnet_dir)
    capitalized = sources.pop("capitalized")
    origin: dict[str, str] = {}  # entry -> its first source
    for name, entries in sources.items():
        for entry in entries:
            origin.setdefault(entry, name)
    frequency = _frequency_function()
    base = sorted(origin, key=lambda e: -frequency(e))  # stable: ties keep source order
    chosen = base[:max_entries]
    capitalized.sort(key=lambda e: -frequency(e))
    if counts is not None:
        counts.update({name: 0 for name in [*sources, "capitalized"]})
        for entry in chosen:
            counts[origin[entry]] += 1
    seen = set(chosen)
    for entry in capitalized:
        if len(chosen) >= max_entries:
            break
        if entry not in seen:
            seen.add(entry)
            chosen.append(entry)
            if counts is not None:
                counts["capitalized"] += 1
    return chosen


# -- the scorer -------------------------------------------------------------------------
class MetaCLIPOptions(Options):
    """``metadata`` (a JSON array of entries) or ``wordnet = true``; the threshold ``t``."""

    metadata: Path | None = None
    wordnet: bool = False
    t: int = Field(DEFAULT_T, ge=1)
    max_entries: int = Field(DEFAULT_MAX_ENTRIES, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> MetaCLIPOptions:
        if (self.metadata is None) == (not self.wordnet):
            raise ValueError(
                'give either metadata = "entries.json" (a JSON array of strings) or '
                "wordnet = true (build the list from WordNet and wordfreq), not both or neither"
            )
        if self.metadata is not None and "max_entries" in self.model_fields_set:
            raise ValueError("max_entries applies to wordnet = true only; remove it")
        return self


class MetaCLIP(Scorer):
    """MetaCLIP's metadata matching and balancing (see the module docstring)."""

    name: ClassVar[str] = "metaclip"
    needs: ClassVar[tuple[str, ...]] = ("text",)
    two_pass: ClassVar[bool] = True
    Options: ClassVar[type[Options]] = MetaCLIPOptions

    def __init__(self, options: MetaCLIPOptions, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.matcher: Matcher | None = None
        self.counts = np.zeros(0, np.int64)
        self.records = 0
        self.records_matched = 0
        self.total_matches = 0
        self.records_scored = 0
        self.records_kept = 0

    @property
    def entries(self) -> list[str]:
        return self.matcher.entries if self.matcher is not None else []

    def setup(self, context: CurationContext) -> None:
        opts = self.options
        if opts.metadata is not None:
            entries = load_metadata(Path(opts.metadata))
        else:
            entries = build_metadata(opts.max_entries)
        self.matcher = Matcher(entries)
        self.counts = np.zeros(len(entries), np.int64)

    def fit(self, chunk: Chunk) -> None:
        captions, entries = self.matcher.match(chunk.text or [])
        self.counts += np.bincount(entries, minlength=len(self.counts))
        self.records += len(chunk)
        self.records_matched += len(np.unique(captions))
        self.total_matches += len(entries)

    def finish_fit(self) -> None:
        self.counts.flags.writeable = False

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        n = len(chunk)
        captions, entries = self.matcher.match(chunk.text or [])
        counts = self.counts[entries]
        keep_p = np.divide(
            self.options.t, counts, out=np.ones(len(counts)), where=counts > self.options.t
        )
        ids = np.asarray(chunk.ids, dtype=np.int64)[captions]
        draws = record_uniform(self.seed, ids * max(len(self.counts), 1) + entries)
        keep = np.zeros(n, dtype=bool)
        keep[captions[draws < keep_p]] = True
        min_count = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(min_count, captions, counts)
        matches = np.bincount(captions, minlength=n).astype(np.int64)
        min_count[matches == 0] = 0
        self.records_scored += n
        self.records_kept += int(keep.sum())
        return {"matches": matches, "min_count": min_count, "keep": keep}

    def state(self) -> dict[str, Any]:
        return {
            "entries": len(self.counts),
            "counts": self.counts.copy(),
            "records": self.records,
            "records_matched": self.records_matched,
            "total_matches": self.total_matches,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state_value(state, "entries", int) != len(self.entries):
            raise ConfigError(
                f"metaclip: the saved counts are for {state['entries']} metadata entries but "
                f"the metadata now has {len(self.entries)}; the metadata changed since the "
                "first pass: restore it, or start the curation again without resuming"
            )
        counts = state_array(state, "counts", "iu", rows=len(self.entries))
        self.counts = counts.astype(np.int64)
        self.counts.flags.writeable = False
        self.records = state_value(state, "records", int)
        self.records_matched = state_value(state, "records_matched", int)
        self.total_matches = state_value(state, "total_matches", int)

    def summary(self) -> dict[str, Any]:
        t = self.options.t
        top = np.argsort(-self.counts, kind="stable")[:20]
        return {
            "metadata": str(self.options.metadata) if self.options.metadata else "wordnet",
            "t": t,
            "entries": len(self.counts),
            "entries_matched": int((self.counts > 0).sum()),
            "head_entries": int((self.counts >= t).sum()),
            "top_entries": [[self.entries[i], int(self.counts[i])] for i in top if self.counts[i]],
            "total_matches": self.total_matches,
            "records": self.records,
            "records_matched": self.records_matched,
            "records_scored": self.records_scored,
            "records_kept": self.records_kept,
        }
