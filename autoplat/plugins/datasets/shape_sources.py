"""Captioned shapes from several "sources", each with its own look, caption style and
shapes: an image-caption pool with real sub-populations (for MoDE data experts).

- ``photo``: filled coloured shapes on a dark background, "a photo of a small red
  circle on the left"; mostly circles and squares.
- ``sketch``: dark outlines on a light background, "a pencil sketch of a triangle at the
  top"; mostly triangles and diamonds.
- ``painting``: filled shapes on a blotchy mid-tone canvas, "an oil painting of a blue
  cross"; mostly crosses and squares.

A record takes one of its source's shapes with probability ``OWN`` and any shape
otherwise; the source is drawn uniformly. The same seed gives the same pool.
"""

from __future__ import annotations

import numpy as np

from autoplat.plugins.datasets.shapes import COLORS, JITTER, POSITIONS, SHAPES, SIZES, shape_mask

OWN = 0.8  # probability that a record shows one of its source's own shapes
SOURCES = {
    "photo": (
        ("circle", "square"),
        ("a photo of a {size} {color} {shape} {where}", "a photo of a {color} {shape} {where}"),
    ),
    "sketch": (
        ("triangle", "diamond"),
        ("a pencil sketch of a {shape} {where}", "a {size} {shape} drawn in pencil {where}"),
    ),
    "painting": (
        ("cross", "square"),
        ("an oil painting of a {color} {shape}", "a {color} {shape} painted on canvas"),
    ),
}


def draw(source: str, shape: str, color: str, size: str, pos: str, s: int, rng) -> np.ndarray:
    """One (3, s, s) image of ``shape`` in the look of ``source``."""
    (fx, fy), _ = POSITIONS[pos]
    cx, cy = (fx + rng.uniform(-JITTER, JITTER)) * s, (fy + rng.uniform(-JITTER, JITTER)) * s
    mask = shape_mask(shape, s, cx, cy, SIZES[size] * s)
    fill = np.asarray(COLORS[color], dtype=np.float32)[:, None]
    if source == "sketch":
        image = np.full((3, s, s), 0.9, dtype=np.float32)
        inner = shape_mask(shape, s, cx, cy, SIZES[size] * s * 0.7)
        image[:, mask & ~inner] = 0.1
        return image
    if source == "painting":
        coarse = rng.uniform(0.3, 0.7, size=(3, 4, 4)).astype(np.float32)
        image = np.kron(coarse, np.ones((1, -(-s // 4), -(-s // 4)), np.float32))[:, :s, :s]
        image[:, mask] = fill
        return image
    image = np.full((3, s, s), 0.05, dtype=np.float32)
    image[:, mask] = fill
    return image


def generate_sources(
    n: int, image_size: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """``n`` images (float32 (n, 3, S, S)), captions, shape labels and source names."""
    names, colors, sizes = list(SOURCES), list(COLORS), list(SIZES)
    images = np.zeros((n, 3, image_size, image_size), dtype=np.float32)
    captions, labels, sources = [], np.zeros(n, dtype=np.int64), []
    for k in range(n):
        source = names[rng.integers(len(names))]
        own, templates = SOURCES[source]
        pool = own if rng.random() < OWN else SHAPES
        shape = pool[rng.integers(len(pool))]
        color, size = colors[rng.integers(len(colors))], sizes[rng.integers(len(sizes))]
        pos = list(POSITIONS)[rng.integers(len(POSITIONS))]
        images[k] = draw(source, shape, color, size, pos, image_size, rng)
        template = templates[rng.integers(len(templates))]
        where = POSITIONS[pos][1]
        captions.append(template.format(size=size, color=color, shape=shape, where=where))
        labels[k] = SHAPES.index(shape)
        sources.append(source)
    if noise:
        images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
        np.clip(images, 0.0, 1.0, out=images)
    return images, captions, labels, sources
