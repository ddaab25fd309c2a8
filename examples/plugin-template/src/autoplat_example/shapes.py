"""Synthetic grey images of four shapes, generated deterministically (no download)."""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np
import torch
from autoplat.core.interfaces import Dataset, DataSpec, Options, Splits
from pydantic import Field

KINDS = ("square", "disk", "cross", "triangle")


class ShapesOptions(Options):
    """How many images to generate and how to split them."""

    n_per_class: int = Field(150, ge=10, description="images per shape")
    size: int = Field(12, ge=8, le=64, description="image side in pixels")
    noise: float = Field(0.1, gt=0, le=1, description="std of the Gaussian pixel noise")
    data_seed: int = Field(0, description="seed of the generator (the study seed splits)")
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


def _mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One filled shape at a random position and scale."""
    r = int(rng.integers(2, size // 3 + 1))
    cy, cx = rng.integers(r, size - r, size=2)
    dy, dx = np.mgrid[:size, :size]
    dy, dx = dy - cy, dx - cx
    if kind == "square":
        return (abs(dy) <= r) & (abs(dx) <= r)
    if kind == "disk":
        return dy**2 + dx**2 <= r**2
    if kind == "cross":
        return ((abs(dy) <= r) & (dx == 0)) | ((abs(dx) <= r) & (dy == 0))
    return (abs(dy) <= r) & (2 * abs(dx) <= dy + r)  # triangle, apex up


@functools.lru_cache(maxsize=4)
def generate(n_per_class: int, size: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images shaped (N, 1, size, size) in [0, 1] plus noise, and labels (index in KINDS)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(KINDS)), n_per_class)
    images = np.stack([_mask(KINDS[label], size, rng) for label in labels]).astype(np.float32)
    images += rng.normal(0, noise, images.shape).astype(np.float32)
    return images[:, None], labels.astype(np.int64)


class Shapes(Dataset):
    """Squares, disks, crosses and triangles; the study seed fixes the split."""

    name: ClassVar[str] = "example-shapes"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    modality: ClassVar[str] = "image"
    Options: ClassVar[type[ShapesOptions]] = ShapesOptions

    def load(self, options: ShapesOptions, seed: int) -> Splits:
        """Generate the images (cached) and split them; the same seed gives the same split."""
        x, y = generate(options.n_per_class, options.size, options.noise, options.data_seed)
        order = np.random.default_rng(seed).permutation(len(y))
        n_test = int(len(y) * options.test_fraction)
        n_val = int(len(y) * options.val_fraction)
        parts = np.split(order, [n_test, n_test + n_val])

        def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])

        spec = DataSpec("classification", "image", (1, options.size, options.size), len(KINDS))
        return Splits(train=part(parts[2]), val=part(parts[1]), test=part(parts[0]), spec=spec)
