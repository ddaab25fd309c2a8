"""scikit-learn's digits: 1797 grey 8x8 images of 10 handwritten digits."""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np

from autoplat.core.interfaces import Dataset, DataSpec, Splits
from autoplat.plugins.datasets.splits import SplitOptions, stratified_splits


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return x, data.target.astype(np.int64)


class Digits(Dataset):
    """scikit-learn's digits, pixels scaled to [0, 1], shaped (N, 1, 8, 8)."""

    name: ClassVar[str] = "digits"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "self_supervised", "generation")
    modality: ClassVar[str] = "image"
    Options: ClassVar[type[SplitOptions]] = SplitOptions
    spec: ClassVar[DataSpec] = DataSpec("classification", "image", (1, 8, 8), 10)

    def load(self, options: SplitOptions, seed: int) -> Splits:
        """Stratified train/val/test splits; the same seed gives the same split."""
        x, y = _raw()
        return stratified_splits(x, y, options, seed, self.spec)
