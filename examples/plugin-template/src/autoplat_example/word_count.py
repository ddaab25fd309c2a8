"""A data-quality scorer: the number of words of a record's text."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from autoplat.core.curation import Scorer


class WordCount(Scorer):
    """Scores ``record["text"]`` by its whitespace-separated words (missing text: 0)."""

    name = "example-word-count"

    def score(self, records: Iterable[dict[str, Any]]) -> Iterator[float]:
        """One score per record, lazily."""
        for record in records:
            yield float(len(str(record.get("text") or "").split()))
