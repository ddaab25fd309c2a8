"""Reference language models for the text-quality scorer: ``ngram`` and ``huggingface``.

- ``ngram``: an interpolated Kneser-Ney trigram (or bigram) model over lower-cased word
  and punctuation tokens, trained in a few seconds on a corpus that exists offline:
  the glosses of WordNet (each definition and each quoted example sentence of
  ``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``; Debian's ``wordnet-base``
  puts them in ``/usr/share/wordnet``) plus any plain-text files given in ``corpus``
  (one sentence a line). The lowest order is the Kneser-Ney continuation unigram
  mixed with an open-vocabulary unigram (weight ``open_vocab_weight``): 0.9 times the
  ``wordfreq`` English frequency of the token plus 0.1 times a character model
  (a geometric length, 1/64 per character) so that every token, even ``img_0042``,
  gets a probability. The line's probability is then a linear mix, token by token:
  ``(1 - unigram_weight) * P_KN(w | u, v) + unigram_weight * P_open(w)`` (default 0.5;
  the end of a line has ``P_open = EOS_PROB``): the glosses are dictionary prose, far
  from web text, and the mix keeps their n-grams from overruling word frequencies
  (perplexity on ``examples/data/alt_texts_10k.parquet``: 20,186 for the Kneser-Ney
  model alone, 12,002 mixed, 15,800 for the open unigram alone).
  Without WordNet and without a corpus the model is that
  open-vocabulary unigram alone (``info["source"] == "wordfreq-unigram"``).
  The tables are cached in the process (and, with ``cache_dir``, in that folder).
- ``huggingface``: a causal LM from a local folder (``path``; ``config.json``, weights
  and tokenizer files, as ``save_pretrained`` writes them), loaded with
  ``local_files_only=True``. A line is scored after the tokenizer's BOS token (or EOS
  when it has no BOS; without either, its first token is not scored).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from autoplat.core.errors import ConfigError, DataError
from autoplat.core.interfaces import LanguageModel, Options

log = logging.getLogger(__name__)

WORDNET_DIR = "/usr/share/wordnet"
WORDNET_DATA = ("data.noun", "data.verb", "data.adj", "data.adv")

TOKEN_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+|[^\w\s]|_")
"""Words (letters, inner apostrophes), digit runs, and single other characters."""


def lm_tokens(line: str) -> list[str]:
    """The ``ngram`` model's tokens of a line: lower-cased words, digit runs, symbols."""
    return TOKEN_RE.findall(line.lower())


# -- the reference corpus ---------------------------------------------------------------
_EXAMPLE_RE = re.compile(r'"([^"]*)"')


def wordnet_sentences(wordnet_dir: str | Path) -> list[str]:
    """Every definition and quoted example of the WordNet glosses under ``wordnet_dir``."""
    sentences: list[str] = []
    for name in WORDNET_DATA:
        path = Path(wordnet_dir) / name
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("  ") or " | " not in line:
                    continue  # the licence header
                gloss = line.split(" | ", 1)[1].strip()
                sentences.extend(e.strip() for e in _EXAMPLE_RE.findall(gloss) if e.strip())
                rest = _EXAMPLE_RE.sub("", gloss)
                sentences.extend(d.strip() for d in rest.split(";") if len(d.strip()) > 1)
    return sentences


def has_wordnet(wordnet_dir: str | Path) -> bool:
    return all((Path(wordnet_dir) / name).is_file() for name in WORDNET_DATA)


# -- the open-vocabulary unigram ---------------------------------------------------------
WORDFREQ_SHARE = 0.9
EOS_PROB = 0.1  # the unigram's end of line: 1 / (mean line length + 1)
CHAR_STOP, CHAR_ALPHABET = 0.2, 64


def char_model_prob(token: str) -> float:
    """A tiny spelling model: geometric length (stop 0.2), 1/64 per character."""
    n = max(len(token), 1)
    return CHAR_STOP * (1 - CHAR_STOP) ** (n - 1) * CHAR_ALPHABET ** (-n)


class OpenUnigram:
    """P_open(token) = 0.9 * wordfreq(token, "en") + 0.1 * char_model(token), memoized."""

    def __init__(self) -> None:
        from wordfreq import word_frequency

        self._word_frequency = word_frequency
        self._cache: dict[str, float] = {}

    def __call__(self, token: str) -> float:
        p = self._cache.get(token)
        if p is None:
            wf = self._word_frequency(token, "en") if any(c.isalnum() for c in token) else 0.0
            p = WORDFREQ_SHARE * wf + (1 - WORDFREQ_SHARE) * char_model_prob(token)
            if len(self._cache) < 2_000_000:
                self._cache[token] = p
        return p


# -- Kneser-Ney tables ------------------------------------------------------------------
BOS, EOS = "<s>", "</s>"


def _discount(counts: np.ndarray) -> float:
    """Kneser-Ney's D = n1 / (n1 + 2 n2) from the count-of-counts (0.75 when undefined)."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.75


class KneserNeyTables:
    """Interpolated Kneser-Ney counts as sorted integer keys (vectorized lookups).

    Token ids: 0 = BOS, 1 = EOS, 2.. = words; ``V`` (= len(vocab)) is the id of every
    unknown token. Keys: bigram ``v*K + w``, trigram ``(u*K + v)*K + w`` with
    ``K = V + 1``.
    """

    def __init__(self, order: int) -> None:
        self.order = order
        self.vocab: dict[str, int] = {BOS: 0, EOS: 1}
        self.arrays: dict[str, np.ndarray] = {}
        self.discounts: dict[str, float] = {}

    # training ---------------------------------------------------------------------
    @classmethod
    def train(cls, sentences: list[str], order: int) -> KneserNeyTables:
        tables = cls(order)
        vocab = tables.vocab
        ids: list[int] = []
        pad = [0] * (order - 1)
        for sentence in sentences:
            ids.extend(pad)
            ids.extend(vocab.setdefault(t, len(vocab)) for t in lm_tokens(sentence))
            ids.append(1)
        seq = np.asarray(ids, dtype=np.int64)
        K = len(vocab) + 1
        if K**order >= 2**62:
            raise ConfigError(
                f"the n-gram corpus has {K} distinct tokens, too many for order {order}; "
                "use order = 2 or a smaller corpus"
            )
        predicted = np.flatnonzero(seq != 0)  # every position but the padding
        predicted = predicted[predicted >= order - 1]
        a = tables.arrays
        if order == 3:
            u, v, w = seq[predicted - 2], seq[predicted - 1], seq[predicted]
            keys3, c3 = np.unique((u * K + v) * K + w, return_counts=True)
            ctx3, first = np.unique(keys3 // K, return_index=True)
            a["keys3"], a["c3"] = keys3, c3
            a["ctx3"] = ctx3
            a["den3"] = np.add.reduceat(c3, first)
            a["types3"] = np.diff(np.append(first, len(keys3)))
            tables.discounts["D3"] = _discount(c3)
            # bigram continuation counts: distinct left words; (<s>, w) keeps its raw count
            suffix = keys3 % (K * K)
            weight = np.where(suffix // K == 0, c3, 1)
            order_ = np.argsort(suffix, kind="stable")
            keys2, first2 = np.unique(suffix[order_], return_index=True)
            c2 = np.add.reduceat(weight[order_], first2)
        else:
            v, w = seq[predicted - 1], seq[predicted]
            keys2, c2 = np.unique(v * K + w, return_counts=True)
        a["keys2"], a["c2"] = keys2, c2
        tables.discounts["D2"] = _discount(c2)
        ctx2 = keys2 // K
        a["den2"] = np.bincount(ctx2, weights=c2, minlength=K).astype(np.float64)
        a["types2"] = np.bincount(ctx2, minlength=K).astype(np.float64)
        cont1 = np.bincount(keys2 % K, minlength=K).astype(np.float64)
        cont1[0] = 0.0
        a["p_cont1"] = cont1 / cont1.sum()
        return tables

    # persistence -----------------------------------------------------------------
    def save(self, path: Path) -> None:
        meta = {"order": self.order, "discounts": self.discounts}
        words = "\n".join(sorted(self.vocab, key=self.vocab.__getitem__))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=json.dumps(meta), words=words, **self.arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> KneserNeyTables:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            tables = cls(meta["order"])
            tables.discounts = meta["discounts"]
            words = str(data["words"]).split("\n")
            tables.vocab = {word: i for i, word in enumerate(words)}
            tables.arrays = {k: data[k] for k in data.files if k not in ("meta", "words")}
        return tables

    # scoring ---------------------------------------------------------------------
    @staticmethod
    def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
        if len(keys) == 0:
            return np.zeros(len(query))
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        return np.where(keys[pos] == query, values[pos], 0).astype(np.float64)

    def token_probs(self, lines: list[list[str]], p_open: OpenUnigram, open_weight: float):
        """Per token (each line's tokens then EOS): its probability, and its line index."""
        vocab, unk = self.vocab, len(self.vocab)
        K = unk + 1
        pad = [0] * (self.order - 1)
        ids: list[int] = []
        opens: list[float] = []
        line_of: list[int] = []
        for i, tokens in enumerate(lines):
            ids.extend(pad)
            for t in tokens:
                ids.append(vocab.get(t, unk))
                opens.append(p_open(t))
            ids.append(1)
            opens.append(0.0)
            line_of.extend([i] * (len(tokens) + 1))
        seq = np.asarray(ids, dtype=np.int64)
        pos = np.flatnonzero(seq != 0)
        pos = pos[pos >= self.order - 1]
        w, v = seq[pos], seq[pos - 1]
        a = self.arrays
        p_cont = np.append(a["p_cont1"], 0.0)  # the unknown id has no continuation mass
        p = (1 - open_weight) * p_cont[w] + open_weight * np.asarray(opens)
        # bigram level
        D2 = self.discounts["D2"]
        den2 = np.append(a["den2"], 0.0)[v]
        types2 = np.append(a["types2"], 0.0)[v]
        c2 = self._lookup(a["keys2"], a["c2"], v * K + w)
        safe2 = np.where(den2 > 0, den2, 1.0)
        p = np.where(den2 > 0, (np.maximum(c2 - D2, 0) + D2 * types2 * p) / safe2, p)
        if self.order == 3:
            u = seq[pos - 2]
            D3 = self.discounts["D3"]
            ctx = u * K + v
            den3 = self._lookup(a["ctx3"], a["den3"], ctx)
            types3 = self._lookup(a["ctx3"], a["types3"], ctx)
            c3 = self._lookup(a["keys3"], a["c3"], ctx * K + w)
            safe3 = np.where(den3 > 0, den3, 1.0)
            p = np.where(den3 > 0, (np.maximum(c3 - D3, 0) + D3 * types3 * p) / safe3, p)
        return p, np.asarray(line_of, dtype=np.int64)


_TABLES: dict[str, KneserNeyTables] = {}
_TABLES_LOCK = threading.Lock()


class NGramOptions(Options):
    """Where the ``ngram`` model's training text comes from, and its shape."""

    wordnet_dir: str | None = Field(
        WORDNET_DIR, description="folder with WordNet's data.* files; '' or none: no WordNet"
    )
    corpus: list[str] = Field(
        default_factory=list, description="more plain-text files to train on, a sentence a line"
    )
    order: Literal[2, 3] = Field(3, description="2: bigram, 3: trigram")
    open_vocab_weight: float = Field(
        0.5, gt=0, lt=1, description="share of the wordfreq/character unigram at the lowest order"
    )
    unigram_weight: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="share of the wordfreq/character unigram mixed into each "
        "token's n-gram probability (0: the Kneser-Ney model alone)",
    )
    cache_dir: str | None = Field(None, description="folder to keep the trained tables in")


class NGramLM(LanguageModel):
    """Interpolated Kneser-Ney n-grams on WordNet glosses, backed off to ``wordfreq``."""

    name: ClassVar[str] = "ngram"
    Options: ClassVar[type[Options]] = NGramOptions

    def __init__(self, options: NGramOptions, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.tables: KneserNeyTables | None = None
        self.p_open: OpenUnigram | None = None
        self.info: dict[str, Any] = {"lm": self.name}

    def _sources(self) -> tuple[list[Path], list[Path]]:
        opts = self.options
        wordnet: list[Path] = []
        if opts.wordnet_dir:
            if has_wordnet(opts.wordnet_dir):
                wordnet = [Path(opts.wordnet_dir) / name for name in WORDNET_DATA]
            else:
                log.warning(
                    "ngram LM: no WordNet data files in %s (install Debian's wordnet-base); "
                    "training on the other corpus files only",
                    opts.wordnet_dir,
                )
        corpus = [Path(p) for p in opts.corpus]
        for path in corpus:
            if not path.is_file():
                raise ConfigError(
                    f"ngram language model: corpus file '{path}' not found; fix the path in "
                    "language_model_options.corpus"
                )
        return wordnet, corpus

    def setup(self) -> None:
        self.p_open = OpenUnigram()
        wordnet, corpus = self._sources()
        opts = self.options
        if not wordnet and not corpus:
            self.info.update(source="wordfreq-unigram", order=1)
            log.warning("ngram LM: no training text; using the wordfreq unigram alone")
            return
        stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in wordnet + corpus]
        key = hashlib.sha256(json.dumps([stamp, opts.order]).encode()).hexdigest()[:16]
        cache = Path(opts.cache_dir) / f"ngram-{key}.npz" if opts.cache_dir else None
        with _TABLES_LOCK:
            tables = _TABLES.get(key)
            if tables is None:
                tables = self._load_or_train(cache, wordnet, corpus)
                _TABLES[key] = tables
            if cache is not None and not cache.is_file():
                try:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    tables.save(cache)
                except OSError as exc:
                    log.warning("ngram LM: cannot write cache %s (%s)", cache, exc)
        self.tables = tables
        source = "+".join((["wordnet-glosses"] if wordnet else []) + (["corpus"] if corpus else []))
        self.info.update(
            source=source,
            order=opts.order,
            unigram_weight=opts.unigram_weight,
            vocabulary=len(tables.vocab),
            discounts={k: round(v, 4) for k, v in tables.discounts.items()},
        )

    def _load_or_train(self, cache: Path | None, wordnet: list[Path], corpus: list[Path]):
        if cache is not None and cache.is_file():
            try:
                return KneserNeyTables.load(cache)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ngram LM: ignoring unreadable cache %s (%s)", cache, exc)
        sentences = wordnet_sentences(wordnet[0].parent) if wordnet else []
        for path in corpus:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise DataError(f"ngram language model: cannot read '{path}': {exc}") from None
            sentences.extend(line for line in text.splitlines() if line.strip())
        return KneserNeyTables.train(sentences, self.options.order)

    def log_likelihood(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.p_open is None:
            self.setup()
        tokenized = [lm_tokens(line) for line in lines]
        counts = np.asarray([len(t) + 1 for t in tokenized], dtype=np.int64)  # + EOS
        if not lines:
            return np.zeros(0), counts
        weight = self.options.open_vocab_weight
        unigram = np.asarray([q for t in tokenized for q in self._unigram(t)])
        if self.tables is None:  # the unigram alone
            p = unigram
            where = np.repeat(np.arange(len(lines)), counts)
        else:
            p, where = self.tables.token_probs(tokenized, self.p_open, weight)
            mix = self.options.unigram_weight
            p = (1 - mix) * p + mix * unigram
        logp = np.log(np.maximum(p, 1e-300))
        # bincount adds each line's terms in order: the same value in any batch
        ll = np.bincount(where, weights=logp, minlength=len(lines))
        return ll, counts

    def _unigram(self, tokens: list[str]) -> list[float]:
        """P_open of each token, then EOS_PROB for the end of the line."""
        return [*map(self.p_open, tokens), EOS_PROB]


# -- Hugging Face causal LMs ---------------------------------------------------------------
class HuggingFaceOptions(Options):
    """A local causal LM folder and how to batch it."""

    path: str = Field(..., min_length=1, description="local folder of a causal LM")
    batch_size: int = Field(16, ge=1)
    max_tokens: int = Field(
        512, ge=2, description="lines are cut to this many tokens (and the model's context)"
    )
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda:0'")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class HuggingFaceLM(LanguageModel):
    """A causal language model from a local folder (``transformers``, offline)."""

    name: ClassVar[str] = "huggingface"
    Options: ClassVar[type[Options]] = HuggingFaceOptions

    def __init__(self, options: HuggingFaceOptions, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.model = None
        self.tokenizer = None
        self.info: dict[str, Any] = {"lm": self.name, "path": options.path}

    def setup(self) -> None:
        path = Path(self.options.path).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"huggingface language model: '{path}' is not a folder; give the local folder "
                "of a causal LM (config.json, weights, tokenizer files, as save_pretrained "
                "writes them); nothing is downloaded"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"huggingface language model: '{path}' has no config.json; point path at the "
                "folder save_pretrained wrote"
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=getattr(torch, self.options.dtype)
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"huggingface language model: cannot load a causal LM from '{path}': {exc}"
            ) from None
        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        start = tokenizer.bos_token_id
        self.start_id = start if start is not None else tokenizer.eos_token_id
        positions = getattr(model.config, "max_position_embeddings", None)
        self.max_tokens = min(self.options.max_tokens, positions or self.options.max_tokens)
        self.info.update(device=str(self.device), parameters=model.num_parameters())

    def encode(self, line: str) -> list[int]:
        """The ids scored for a line: BOS (or EOS) then the line's tokens, cut to size."""
        ids = self.tokenizer(line, add_special_tokens=False)["input_ids"]
        if self.start_id is not None:
            ids = [self.start_id, *ids]
        return ids[: self.max_tokens]

    def log_likelihood(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self.model is None:
            self.setup()
        encoded = [self.encode(line) for line in lines]
        ll = np.zeros(len(lines))
        counts = np.asarray([max(len(ids) - 1, 0) for ids in encoded], dtype=np.int64)
        order = sorted(range(len(lines)), key=lambda i: (len(encoded[i]), i))
        order = [i for i in order if counts[i] > 0]
        size = self.options.batch_size
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else 0
        with torch.inference_mode():
            for start in range(0, len(order), size):
                batch = order[start : start + size]
                width = max(len(encoded[i]) for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                target = ids[:, 1:]
                picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
                for row, i in enumerate(batch):
                    ll[i] = float(picked[row].double().sum())
        return ll, counts


def perplexity(ll: np.ndarray, tokens: np.ndarray) -> float:
    """exp(-sum(ll) / sum(tokens)); nan when there are no tokens."""
    total = float(np.sum(tokens))
    return math.exp(-float(np.sum(ll)) / total) if total > 0 else float("nan")
