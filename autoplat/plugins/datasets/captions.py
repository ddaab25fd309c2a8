"""Caption tokenizers shared by the caption datasets (shapes, image-captions, video).

A tokenizer is a ``tokenizers.Tokenizer`` trained offline on a dataset's training
captions (nothing is downloaded). Captions are lower-cased. Every kind uses the same
special tokens with fixed ids:

=====  =========  =======================================================
id     token      use
=====  =========  =======================================================
0      ``[PAD]``  padding after the caption (``encode`` pads with 0)
1      ``[UNK]``  a piece the vocabulary lacks
2      ``[BOS]``  first token of every encoded caption
3      ``[EOS]``  last non-pad token of every encoded caption (also when truncated)
=====  =========  =======================================================

Kinds:

- ``"bpe"`` (default): byte-pair encoding over words and punctuation (end-of-word
  suffix ``</w>``), learned by a small deterministic trainer here and run by
  ``tokenizers.models.BPE``. Characters never seen in training become ``[UNK]``.
  Decoding gives the lower-cased words joined by single spaces (so "red, big" comes
  back as "red , big").
- ``"byte"``: one token per UTF-8 byte (256 + 4 ids); needs no training, ignores
  ``vocab_size`` and round-trips any text exactly (after lower-casing).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from autoplat.core.interfaces import Options

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

    from autoplat.core.interfaces import Splits

TokenizerKind = Literal["bpe", "byte"]
SUFFIX = "</w>"  # marks the last piece of a word (BPE)
PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
BYTE_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
MIN_VOCAB_SIZE = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from bytes to printable characters (what ``ByteLevel`` pre-tokenizes to)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _learn_bpe(
    word_counts: dict[str, int], vocab_size: int, suffix: str
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-pair merges learned from word counts, deterministically.

    The most frequent adjacent pair is merged first; ties go to the lexicographically
    smallest pair, so the result depends only on the counts (the ``tokenizers`` trainers
    break ties by hash-map order, which changes from run to run). Pairs seen once are
    not merged.
    """
    words = sorted(word_counts)
    symbols = [[*w[:-1], w[-1] + suffix] for w in words]
    counts = [word_counts[w] for w in words]
    alphabet = sorted({s for syms in symbols for s in syms})
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for s in alphabet:
        vocab.setdefault(s, len(vocab))
    pair_counts: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for i, syms in enumerate(symbols):
        for pair in zip(syms, syms[1:], strict=False):
            pair_counts[pair] = pair_counts.get(pair, 0) + counts[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue  # stale entry
        if -neg < 2:
            break
        merged = pair[0] + pair[1]
        merges.append(pair)
        vocab.setdefault(merged, len(vocab))
        touched: dict[tuple[str, str], int] = {}
        for i in sorted(where.pop(pair, ())):
            syms, c = symbols[i], counts[i]
            for old in zip(syms, syms[1:], strict=False):
                touched[old] = touched.get(old, 0) - c
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and (syms[j], syms[j + 1]) == pair:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            symbols[i] = out
            for new in zip(out, out[1:], strict=False):
                touched[new] = touched.get(new, 0) + c
                where.setdefault(new, set()).add(i)
        for p, delta in touched.items():
            if delta:
                pair_counts[p] = pair_counts.get(p, 0) + delta
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
                else:
                    pair_counts.pop(p)
        pair_counts.pop(pair, None)
    return vocab, merges


def train_tokenizer(
    captions: Iterable[str],
    vocab_size: int,
    seed: int = 0,
    kind: TokenizerKind = "bpe",
) -> Tokenizer:
    """A tokenizer trained on ``captions`` (special ids as in the module docstring).

    Training is deterministic: the same captions give the same tokenizer, whatever their
    order. ``seed`` is accepted so callers can pass their split seed; training has no
    randomness, so it does not change the result.

    Args:
        captions: Training captions (e.g. the train split's only, to avoid leakage).
        vocab_size: Largest vocabulary, special tokens included (at least 32); a small
            corpus may give fewer (``tokenizer.get_vocab_size()`` is the real size).
            Ignored for ``kind="byte"``.
        seed: Unused (see above).
        kind: "bpe" or "byte".

    Raises:
        ValueError: ``vocab_size`` below 32 or an unknown ``kind``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    del seed
    if kind == "byte":
        vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
        vocab |= {char: len(SPECIAL_TOKENS) + b for b, char in _bytes_to_unicode().items()}
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    elif kind == "bpe":
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE}, got {vocab_size}")
        normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        pre_tokenizer = pre_tokenizers.Whitespace()
        word_counts: dict[str, int] = {}
        for caption in captions:
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)):
                word_counts[word] = word_counts.get(word, 0) + 1
        vocab, merges = _learn_bpe(word_counts, vocab_size, SUFFIX)
        tokenizer = Tokenizer(
            models.BPE(vocab=vocab, merges=merges, unk_token=UNK, end_of_word_suffix=SUFFIX)
        )
        tokenizer.normalizer = normalizer
        tokenizer.pre_tokenizer = pre_tokenizer
        tokenizer.decoder = decoders.BPEDecoder(suffix=SUFFIX)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; use bpe or byte")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # already in the vocab: same ids
    tokenizer.post_processor = TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)]
    )
    return tokenizer


def encode(tokenizer: Tokenizer, captions: Sequence[str], length: int) -> torch.Tensor:
    """Token ids of ``captions``, shape (len(captions), length), int64.

    Each row is ``[BOS] tokens... [EOS]`` then padding with 0; a caption too long is cut
    so that its row still ends in ``[EOS]``.

    Raises:
        ValueError: ``length`` below 3.
    """
    import torch

    if length < 3:
        raise ValueError(f"text length must be at least 3, got {length}")
    out = torch.full((len(captions), length), PAD_ID, dtype=torch.long)
    for row, enc in enumerate(tokenizer.encode_batch(list(captions))):
        ids = enc.ids
        if len(ids) > length:
            ids = ids[: length - 1] + [EOS_ID]
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def decode(tokenizer: Tokenizer, tokens: torch.Tensor) -> list[str]:
    """Captions of token rows (``encode``'s output), special tokens and padding dropped."""
    rows = tokens.tolist() if tokens.dim() == 2 else [tokens.tolist()]
    return tokenizer.decode_batch(rows, skip_special_tokens=True)


def token_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Non-pad tokens per row (the position of ``[EOS]`` plus one), shape (N,)."""
    return (tokens != PAD_ID).sum(dim=1)


# -- splits of captioned data -------------------------------------------------------------
class CaptionOptions(Options):
    """How captions become token ids (shared by the caption datasets)."""

    tokenizer: TokenizerKind = Field(
        "bpe", description="bpe: trained on the train captions; byte: one token per byte"
    )
    vocab_size: int = Field(
        512, ge=MIN_VOCAB_SIZE, le=65536, description="largest BPE vocabulary (with specials)"
    )
    text_length: int | None = Field(
        None, ge=3, le=1024, description="tokens per caption; default: the longest train caption"
    )
    prompt: str = Field(
        "a photo of a {name}", description="zero-shot prompt per class; {name} is the class"
    )

    @field_validator("prompt")
    @classmethod
    def _has_name(cls, prompt: str) -> str:
        if "{name}" not in prompt:
            raise ValueError("prompt must contain {name}, where the class name goes")
        return prompt


def caption_splits(
    images: torch.Tensor,
    captions: Sequence[str],
    labels: torch.Tensor,
    parts: tuple[Sequence[int], Sequence[int], Sequence[int]],
    label_names: Sequence[str],
    options: CaptionOptions,
    seed: int,
) -> Splits:
    """Contrastive splits: a tokenizer trained on the train captions, prompts per class.

    Args:
        images: float (N, C, H, W).
        captions: N captions.
        labels: int64 (N,), -1 where unlabeled.
        parts: Row indices of train, val and test.
        label_names: Class names by label index (empty: no labels, no prompts).
        options: Tokenizer, vocabulary, text length and prompt.
        seed: Passed to ``train_tokenizer``.

    Returns:
        Splits whose train is ``(images, tokens, labels)`` and whose val and test add
        ``prompt_tokens`` (num_classes, text_length) when there are label names; the spec is
        ``DataSpec("contrastive", "image-text", (C, H, W), num_classes, label_names,
        vocab_size=..., text_length=...)``.
    """
    import torch

    from autoplat.core.interfaces import DataSpec, Splits

    train_captions = [captions[i] for i in parts[0]]
    tokenizer = train_tokenizer(train_captions, options.vocab_size, seed, options.tokenizer)
    length = options.text_length
    if length is None:
        longest = max(len(e.ids) for e in tokenizer.encode_batch(train_captions))
        length = max(3, longest)
    tokens = encode(tokenizer, captions, length)
    prompts = (
        encode(tokenizer, [options.prompt.format(name=n) for n in label_names], length)
        if label_names
        else None
    )

    def part(idx: Sequence[int], with_prompts: bool) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(list(idx), dtype=torch.long)
        out = (images[index], tokens[index], labels[index])
        return (*out, prompts) if with_prompts and prompts is not None else out

    spec = DataSpec(
        "contrastive",
        "image-text",
        tuple(images.shape[1:]),
        len(label_names),
        tuple(label_names),
        vocab_size=tokenizer.get_vocab_size(),
        text_length=length,
        tokenizer=tokenizer.to_str(),
    )
    return Splits(
        train=part(parts[0], False),
        val=part(parts[1], True),
        test=part(parts[2], True),
        spec=spec,
    )
