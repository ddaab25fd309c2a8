"""Data curation: the ``Scorer`` interface that maps records to quality scores."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar


class Scorer(ABC):
    """Scores records (dicts such as ``{"text": ...}`` or ``{"image": path}``), streaming.

    ``score`` must consume its input lazily (files may not fit in memory) and give the
    same score to a record however the records are chunked.
    """

    name: ClassVar[str]

    @abstractmethod
    def score(self, records: Iterable[dict[str, Any]]) -> Iterator[float]:
        """Yield one score per record, in order."""

    def score_all(self, records: Iterable[dict[str, Any]]) -> list[float]:
        """All scores of ``records`` as a list."""
        return list(self.score(records))
