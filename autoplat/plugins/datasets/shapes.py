"""Synthetic shapes with captions: coloured shapes on a dark background, drawn with numpy.

Each image holds one shape with four attributes drawn independently from the seed:
type (``SHAPES``: the label), colour (``COLORS``), size (small/large) and position
(left/right/top/bottom/center, with a little jitter), plus Gaussian pixel noise. Its
caption says all four, in one of a few templates, e.g. "a large red circle on the left"
or "a photo of a small blue square at the top". Everything is generated on the fly and
fixed by the seed: the same seed and options give the same splits.

Layouts (option ``captions``):

- ``captions = true`` (default): task "contrastive", modality "image-text". ``train`` is
  ``(images, tokens, labels)``; ``val`` and ``test`` are ``(images, tokens, labels,
  prompt_tokens)``, where ``prompt_tokens[k]`` is the tokenized zero-shot prompt of class
  k (``prompt``, default "a photo of a {name}"). images: float (N, 3, S, S) in [0, 1];
  tokens: int64 (N, text_length), ``[BOS] ... [EOS]`` then 0-padding (see
  ``captions``); labels: int64 (N,) shape index. The tokenizer is trained on the train
  captions only; the spec carries ``vocab_size`` and ``text_length``.
- ``captions = false``: task "classification", modality "image": each split is
  ``(images, labels)``, for a classifier or self-supervised training.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from autoplat.core.interfaces import Dataset, DataSpec, Splits
from autoplat.plugins.datasets.captions import CaptionOptions, caption_splits

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "purple": (0.6, 0.15, 0.8),
    "white": (0.95, 0.95, 0.95),
}
SIZES = {"small": 0.16, "large": 0.3}  # radius as a fraction of the image side
POSITIONS = {  # centre (x, y) as fractions of the image side, and the caption's phrase
    "left": ((0.28, 0.5), "on the left"),
    "right": ((0.72, 0.5), "on the right"),
    "top": ((0.5, 0.28), "at the top"),
    "bottom": ((0.5, 0.72), "at the bottom"),
    "center": ((0.5, 0.5), "in the center"),
}
TEMPLATES = (
    "a {size} {color} {shape} {where}",
    "a photo of a {size} {color} {shape} {where}",
    "{where}, a {size} {color} {shape}",
)
JITTER = 0.05  # the centre moves up to this fraction of the side in x and y


class ShapesOptions(CaptionOptions):
    """Sizes of the splits, the image side, noise and how captions are tokenized."""

    n_train: int = Field(2000, ge=1, le=1_000_000)
    n_val: int = Field(250, ge=1, le=1_000_000)
    n_test: int = Field(250, ge=1, le=1_000_000)
    image_size: int = Field(32, ge=8, le=256, description="images are image_size squared")
    noise: float = Field(0.05, ge=0, le=0.5, description="std of Gaussian pixel noise")
    captions: bool = Field(
        True, description="true: (images, tokens, labels) for contrastive; false: (images, labels)"
    )


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean (size, size) mask of one shape centred at pixel (cx, cy) with radius r."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(abs(dx), abs(dy)) <= 0.85 * r
    if shape == "diamond":
        return abs(dx) + abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up, base at cy + 0.75 r
        t = (dy + r) / (1.75 * r)
        return (t >= 0) & (t <= 1) & (abs(dx) <= t * r)
    if shape == "cross":
        arm = 0.35 * r
        return ((abs(dx) <= arm) & (abs(dy) <= r)) | ((abs(dy) <= arm) & (abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def generate(
    n: int, image_size: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[str], np.ndarray, list[dict[str, str]]]:
    """``n`` images (float32 (n, 3, S, S)), their captions, labels and attributes."""
    s = image_size
    images = np.zeros((n, 3, s, s), dtype=np.float32)
    captions: list[str] = []
    attributes: list[dict[str, str]] = []
    shape_i = rng.integers(len(SHAPES), size=n)
    color_i = rng.integers(len(COLORS), size=n)
    size_i = rng.integers(len(SIZES), size=n)
    pos_i = rng.integers(len(POSITIONS), size=n)
    template_i = rng.integers(len(TEMPLATES), size=n)
    jitter = rng.uniform(-JITTER, JITTER, size=(n, 2))
    colors, sizes, positions = list(COLORS), list(SIZES), list(POSITIONS)
    for k in range(n):
        shape, color = SHAPES[shape_i[k]], colors[color_i[k]]
        size, pos = sizes[size_i[k]], positions[pos_i[k]]
        (fx, fy), where = POSITIONS[pos]
        mask = shape_mask(
            shape, s, (fx + jitter[k, 0]) * s, (fy + jitter[k, 1]) * s, SIZES[size] * s
        )
        images[k][:, mask] = np.asarray(COLORS[color], dtype=np.float32)[:, None]
        captions.append(
            TEMPLATES[template_i[k]].format(size=size, color=color, shape=shape, where=where)
        )
        attributes.append({"shape": shape, "color": color, "size": size, "position": pos})
    if noise:
        images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
        np.clip(images, 0.0, 1.0, out=images)
    return images, captions, shape_i.astype(np.int64), attributes


def write_caption_table(
    folder: Path,
    n: int,
    seed: int = 0,
    image_size: int = 32,
    noise: float = 0.05,
    sources: bool = False,
) -> Path:
    """Write ``n`` shapes as PNG files under ``folder/images`` and ``folder/captions.csv``
    (path, caption, label, source): a table for the ``image-captions`` dataset and
    `platform curate`. ``sources``: draw from several sources, each with its own look,
    captions and shapes (``shape_sources``); else all from one (source "shapes"). The same
    seed gives the same files."""
    from PIL import Image

    from autoplat.plugins.datasets.shape_sources import generate_sources

    rng = np.random.default_rng(seed)
    if sources:
        images, captions, labels, origin = generate_sources(n, image_size, noise, rng)
    else:
        images, captions, labels, _ = generate(n, image_size, noise, rng)
        origin = ["shapes"] * n
    (folder / "images").mkdir(parents=True, exist_ok=True)
    table = folder / "captions.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption", "label", "source"])
        for k in range(n):
            path = f"images/{k:06d}.png"
            pixels = (images[k].transpose(1, 2, 0) * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / path)
            writer.writerow([path, captions[k], SHAPES[labels[k]], origin[k]])
    return table


class Shapes(Dataset):
    """Synthetic captioned shapes; label = shape type. See the module docstring."""

    name: ClassVar[str] = "shapes"
    tasks: ClassVar[tuple[str, ...]] = ("contrastive", "classification", "self_supervised")
    modality: ClassVar[str] = "image-text"
    Options: ClassVar[type[ShapesOptions]] = ShapesOptions

    def kind(self, options: ShapesOptions) -> tuple[str, tuple[str, ...]]:
        """Captioned: image-text pairs for contrastive models; else labeled images."""
        if options.captions:
            return "image-text", ("contrastive",)
        return "image", ("classification", "self_supervised")

    def load(self, options: ShapesOptions, seed: int) -> Splits:
        """Generate the splits; the same seed and options give the same tensors."""
        rng = np.random.default_rng(seed)
        n = options.n_train + options.n_val + options.n_test
        images, captions, labels, _ = generate(n, options.image_size, options.noise, rng)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        a, b = options.n_train, options.n_train + options.n_val
        if not options.captions:
            spec = DataSpec("classification", "image", tuple(x.shape[1:]), len(SHAPES), SHAPES)
            return Splits(
                train=(x[:a], y[:a]), val=(x[a:b], y[a:b]), test=(x[b:], y[b:]), spec=spec
            )
        parts = (range(a), range(a, b), range(b, n))
        return caption_splits(x, captions, y, parts, SHAPES, options, seed)
