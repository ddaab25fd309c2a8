"""Images in class folders (``root/<class name>/<image files>``), read with Pillow.

Class names, sorted, become label indices 0..K-1 (``DataSpec.label_names``). Every file
under a class folder (at any depth) whose extension is in ``IMAGE_SUFFIXES`` is an
example; other files and folders whose name starts with "." are skipped.

Each image is converted to grey ("L") or RGB, resized to ``size`` x ``size`` with a box
filter (the aspect ratio is not kept) and scaled to [0, 1] (pixel / 255); there is no
per-channel standardisation. This is exactly what ``platform predict`` does to image
files, so exported models see the same inputs they were trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Dataset, DataSpec, Splits
from autoplat.plugins.datasets.splits import DataOptions, min_per_class, stratified_splits

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File extensions (lower-cased) read as images; the same as ``platform predict`` reads."""
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
"""Pillow modes of single-channel images."""


class ImageFolderOptions(DataOptions):
    """Where the class folders are and how images become tensors."""

    size: int = Field(32, ge=1, le=1024, description="images are resized to size x size")
    channels: Literal[1, 3] | None = Field(
        None, description="1: grey, 3: RGB; default: 1 when every image is grey, else 3"
    )


@contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """``Image.open(path)``; a DataError naming the file when Pillow cannot read it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            yield image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # what Pillow raises for unknown, truncated or corrupt files
        raise DataError(
            f"{path}: cannot read the image ({exc}); replace the file or delete it"
        ) from None


def _read(path: Path, channels: int, size: int) -> np.ndarray:
    """One image as float32 (channels, size, size) in [0, 1]."""
    from PIL import Image

    with _opened(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BOX)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _is_grey(path: Path) -> bool:
    with _opened(path) as image:
        return image.mode in GREY_MODES


def _visible(path: Path, root: Path) -> bool:
    """Whether no part of ``path`` below ``root`` starts with "."."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def find_images(root: Path) -> dict[str, list[Path]]:
    """The image files of each class folder of ``root``, classes and files sorted.

    Raises:
        DataError: ``root`` is missing or not a folder, or has no class folders, or a
            class folder holds no images.
    """
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; check [dataset] path")
    if not root.is_dir():
        raise DataError(
            f"{root} is not a folder; [dataset] path must be a folder holding one folder "
            "of images per class (root/<class name>/<image files>)"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p, root))
    if not folders:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        found = f" but {loose} image files directly inside" if loose else ""
        raise DataError(
            f"{root} has no class folders{found}; put the images of each class in a folder "
            "named after the class (root/<class name>/<image files>)"
        )
    classes: dict[str, list[Path]] = {}
    for folder in folders:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and _visible(p, folder)
        )
        if not files:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(
                f"class folder {folder} holds no images (files ending in {kinds}); add "
                "images or remove the folder"
            )
        classes[folder.name] = files
    return classes


class ImageFolder(Dataset):
    """Images in class folders; options: path, size, channels, val_fraction, test_fraction."""

    name: ClassVar[str] = "image-folder"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "self_supervised", "generation")
    modality: ClassVar[str] = "image"
    Options: ClassVar[type[ImageFolderOptions]] = ImageFolderOptions

    def load(self, options: ImageFolderOptions, seed: int) -> Splits:
        """Read every image and split them, stratified; the same seed gives the same split.

        Raises:
            DataError: The folder is missing or badly laid out, an image cannot be read,
                there are fewer than 2 classes, or a class is too small to split.
        """
        root = options.path
        classes = find_images(root)
        if len(classes) < 2:
            raise DataError(
                f"{root} has only the class folder '{next(iter(classes))}'; classification "
                "needs at least 2 classes (one folder each)"
            )
        needed = min_per_class(options)
        for label, files in classes.items():
            if len(files) < needed:
                raise DataError(
                    f"class folder {root / label} has {len(files)} images; with val_fraction "
                    f"{options.val_fraction} and test_fraction {options.test_fraction} each "
                    f"class needs at least {needed} to split; add images or raise the fractions"
                )
        files = [f for paths in classes.values() for f in paths]
        channels = options.channels
        if channels is None:
            channels = 1 if all(_is_grey(f) for f in files) else 3
        x = np.stack([_read(f, channels, options.size) for f in files])
        y = np.repeat(np.arange(len(classes)), [len(paths) for paths in classes.values()])
        spec = DataSpec(
            "classification",
            "image",
            (channels, options.size, options.size),
            len(classes),
            tuple(classes),
        )
        return stratified_splits(x, y, options, seed, spec, [str(f) for f in files])
