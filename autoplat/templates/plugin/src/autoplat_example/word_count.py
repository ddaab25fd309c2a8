"""A data-quality scorer: the number of words of a record's text."""

from __future__ import annotations

import numpy as np
from autoplat.core.interfaces import Chunk, Options, Scorer


class WordCount(Scorer):
    """Scores each record's text by its whitespace-separated words; keeps those with at
    least ``min_words``."""

    name = "example-word-count"

    class Options(Options):
        min_words: int = 0

    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        """The word count and the keep mask of each record."""
        words = np.array([len(text.split()) for text in chunk.text or []], dtype=np.float64)
        return {"words": words, "keep": words >= self.options.min_words}
