"""Split options and stratified train/val/test splits, shared by the datasets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator

from autoplat.core.interfaces import DataSpec, Options, Splits


class SplitOptions(Options):
    """Fractions of the examples held out for validation and test."""

    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class DataOptions(SplitOptions):
    """Options of a dataset read from a file or folder: its path and the split fractions."""

    path: Path = Field(description="the file or folder; relative to where `platform` runs")

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Ray runs trials in their own working directories: fix the path now.
        return path.expanduser().absolute()


def min_per_class(options: SplitOptions) -> int:
    """The fewest examples a class needs so that train, val and test each hold some.

    With at least this many examples in every class, ``stratified_splits`` succeeds and
    puts every class in every split (checked for fractions 0.01-0.49 and 2-20 classes).
    """
    train_fraction = 1 - options.val_fraction - options.test_fraction
    return max(
        3,
        math.ceil(1 / options.val_fraction),
        math.ceil(1 / options.test_fraction),
        math.ceil(2 / train_fraction),
    )


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
