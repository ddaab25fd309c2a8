"""scikit-learn's digits: 1797 grey 8x8 images of 10 handwritten digits."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from autoplat.core.hookspecs import Register, hookimpl
from autoplat.core.interfaces import Dataset, DataSpec, Options, Splits


class SplitOptions(Options):
    """Fractions of the examples held out for validation and test."""

    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


def stratified_splits(
    x: np.ndarray,
    y: np.ndarray,
    options: SplitOptions,
    seed: int,
    spec: DataSpec,
    sources: Sequence[str] = (),
) -> Splits:
    """Split ``(x, y)`` into stratified train/val/test tensors, fixed by ``seed``.

    Args:
        x: Inputs, float32, one example per row.
        y: Integer class labels.
        options: The val and test fractions of all examples.
        seed: The same seed gives the same split.
        spec: The spec the splits carry.
        sources: Where each example comes from (becomes ``train_sources``), or empty.
    """
    from sklearn.model_selection import train_test_split  # lazy: slow import

    indices = np.arange(len(y))
    rest, test = train_test_split(
        indices, test_size=options.test_fraction, stratify=y, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=options.val_fraction / (1 - options.test_fraction),
        stratify=y[rest],
        random_state=seed,
    )

    def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(x[idx]), torch.from_numpy(y[idx].astype(np.int64))

    train_sources = tuple(sources[i] for i in train) if len(sources) else ()
    return Splits(part(train), part(val), part(test), spec, train_sources)


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


@hookimpl
def register_datasets(register: Register) -> None:
    """Register the digits dataset."""
    register(Digits())
