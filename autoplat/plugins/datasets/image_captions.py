"""Captioned images from files: a CSV or JSONL table of (path, caption[, label]).

``path`` is the table (``.csv``, ``.jsonl``; ``.tsv`` is read as tab-separated CSV) or a
folder holding one named ``captions.csv``, ``captions.jsonl`` or ``captions.tsv``. Each
row (a CSV with a header line, or one JSON object per line) has:

- ``path``: the image file, relative to the table's folder (or absolute);
- ``caption``: its text;
- ``label`` (optional column or key): a class name; empty or missing means unlabeled.

An image may appear on several rows (several captions); all its rows go to the same
split, so no image is in two splits. Images are read with Pillow, converted to grey or
RGB (``channels``; default grey only when every image is), resized to ``image_size``
squared with a box filter and scaled to [0, 1], as ``image-folder`` does.

MoDE data experts: ``experts`` names the ``scores.parquet`` of `platform curate` run with
the ``mode`` scorer on this table (record ids are table rows from 0), and ``expert``
keeps only that expert's rows in train (val and test stay whole, so experts compare);
a search over ``[space] dataset.expert = [0, 1, ...]`` trains one model per expert.

A row whose image is missing or unreadable, or whose caption is empty, is a DataError
naming the table, its line and the file; with ``skip_bad = true`` such rows are skipped
instead, and how many (and the first few) are logged as a warning.

The splits are contrastive (see ``captions.caption_splits``): train ``(images, tokens,
labels)``; val and test ``(images, tokens, labels, prompt_tokens)`` when some rows are
labeled (class names sorted are labels 0..K-1; -1 marks unlabeled rows), else
``(images, tokens, labels)`` with every label -1.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Dataset, Splits
from autoplat.plugins.datasets.captions import CaptionOptions, caption_splits
from autoplat.plugins.datasets.image_folder import GREY_MODES, _opened, _read

log = logging.getLogger(__name__)

TABLE_NAMES = ("captions.csv", "captions.jsonl", "captions.tsv")
MIN_IMAGES = 3  # one per split


class ImageCaptionsOptions(CaptionOptions):
    """Where the table is, how images become tensors, the split and bad rows."""

    path: Path = Field(description="a .csv/.jsonl/.tsv table, or a folder holding captions.*")
    image_size: int = Field(32, ge=1, le=1024, description="images are resized to this squared")
    channels: Literal[1, 3] | None = Field(
        None, description="1: grey, 3: RGB; default: 1 when every image is grey, else 3"
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="of the images, not rows")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="of the images, not rows")
    skip_bad: bool = Field(
        False, description="skip rows with a missing/unreadable image or empty caption"
    )
    experts: Path | None = Field(
        None, description="scores.parquet of `platform curate` with a mode scorer on this table"
    )
    expert: int | None = Field(
        None, ge=0, description="train on this data expert's rows only (default: all rows)"
    )

    @model_validator(mode="after")
    def _expert_pair(self) -> ImageCaptionsOptions:
        if self.expert is not None and self.experts is None:
            raise ValueError(
                "expert needs experts: the scores.parquet of `platform curate` with a mode "
                "scorer on this table"
            )
        return self

    @field_validator("path", "experts")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Ray runs trials in their own working directories: fix the path now.
        return None if path is None else path.expanduser().absolute()


Row = tuple[int, str, str, str]  # line, image path (as written), caption, label


def find_table(path: Path) -> Path:
    """The captions table at ``path`` (a file, or a folder holding one of ``TABLE_NAMES``)."""
    if not path.exists():
        raise DataError(f"captions table {path} does not exist; check [dataset] path")
    if path.is_dir():
        found = [path / name for name in TABLE_NAMES if (path / name).is_file()]
        if not found:
            raise DataError(
                f"folder {path} holds no captions table; add one of {', '.join(TABLE_NAMES)} "
                "with columns path, caption and optionally label"
            )
        return found[0]
    return path


def read_table(table: Path) -> list[Row]:
    """The rows of a CSV/TSV (header line) or JSONL table, with their line numbers."""
    try:
        text = table.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{table}: cannot read the captions table ({exc})") from None
    rows: list[Row] = []
    if table.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{table}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{table}:{number}: expected a JSON object, got {line[:60]!r}")
            for key in ("path", "caption"):
                if key not in record:
                    raise DataError(
                        f"{table}:{number}: missing key '{key}'; each line needs path and "
                        "caption (label optional)"
                    )
            label = record.get("label")
            rows.append(
                (
                    number,
                    str(record["path"]),
                    str(record["caption"] or ""),
                    "" if label is None else str(label),
                )
            )
        return rows
    delimiter = "\t" if table.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ("path", "caption") if c not in columns]
    if missing:
        raise DataError(
            f"{table}:1: the header lacks column(s) {', '.join(missing)}; it has "
            f"{', '.join(columns) or 'none'} (need path, caption and optionally label)"
        )
    for record in reader:
        record = {(k or "").strip(): v for k, v in record.items()}
        number = reader.line_num
        rows.append(
            (
                number,
                (record["path"] or "").strip(),
                (record["caption"] or "").strip(),
                (record.get("label") or "").strip(),
            )
        )
    return rows


EXPERT_COLUMN = "mode.expert"  # what `platform curate` with the mode scorer writes


def read_experts(scores: Path, table: Path, rows: int) -> np.ndarray:
    """Each table row's data expert, from a curate ``scores.parquet`` of that table
    (record ids are row numbers from 0, in table order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not scores.is_file():
        raise DataError(
            f"experts file {scores} does not exist; run `platform curate` with [scorers.mode] "
            "on this table first, or fix [dataset] experts"
        )
    try:
        names = pq.read_schema(scores).names
        if EXPERT_COLUMN not in names or "id" not in names:
            raise DataError(
                f"{scores}: no '{EXPERT_COLUMN}' column (it has {', '.join(names)}); give the "
                "scores.parquet of `platform curate` run with [scorers.mode] on this table"
            )
        data = pq.read_table(scores, columns=["id", EXPERT_COLUMN])
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{scores}: cannot read the experts scores file ({exc})") from None
    ids = data.column("id").to_numpy()
    if len(ids) != rows or not np.array_equal(np.sort(ids), np.arange(rows)):
        raise DataError(
            f"{scores}: scores of {len(ids)} records, but {table} has {rows} rows; curate this "
            "table (the same file, unchanged) with [scorers.mode] to get its experts"
        )
    expert = np.empty(rows, dtype=np.int64)
    expert[ids] = data.column(EXPERT_COLUMN).to_numpy()
    return expert


def _probe(file: Path) -> tuple[str | None, str]:
    """The image's Pillow mode after decoding it fully, or (None, why it cannot be read)."""
    try:
        with _opened(file) as image:
            image.load()  # decode everything: a truncated file fails here, not later
            return image.mode, ""
    except DataError as exc:
        return None, str(exc).split("; replace")[0]
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"{file}: cannot read the image ({exc})"


class ImageCaptions(Dataset):
    """Images with captions from a CSV/JSONL table; see the module docstring."""

    name: ClassVar[str] = "image-captions"
    tasks: ClassVar[tuple[str, ...]] = ("contrastive",)
    modality: ClassVar[str] = "image-text"
    Options: ClassVar[type[ImageCaptionsOptions]] = ImageCaptionsOptions

    def load(self, options: ImageCaptionsOptions, seed: int) -> Splits:
        """Read the table and images and split by image; the same seed gives the same split.

        Raises:
            DataError: The table is missing or malformed, a row is bad (without
                ``skip_bad``), or fewer than 3 images remain.
        """
        table = find_table(options.path)
        rows = read_table(table)
        if not rows:
            raise DataError(f"{table}: the captions table has no rows")
        root = table.parent
        good: list[tuple[Row, Path]] = []
        bad: list[str] = []
        modes: dict[Path, str | None] = {}  # None: cannot be read
        problems: dict[Path, str] = {}
        kept_rows: list[int] = []  # index in rows of each good row
        for index, row in enumerate(rows):
            number, written, caption, _ = row
            where = f"{table}:{number}"
            file = Path(written).expanduser()
            file = file if file.is_absolute() else root / file
            problem = None
            if not written:
                problem = f"{where}: empty path"
            elif not caption:
                problem = f"{where}: empty caption for image {file}"
            elif not file.is_file():
                problem = f"{where}: image {file} does not exist"
            else:
                if file not in modes:
                    modes[file], problems[file] = _probe(file)
                if modes[file] is None:
                    problem = f"{where}: {problems[file]}"
            if problem is None:
                good.append((row, file))
                kept_rows.append(index)
            elif options.skip_bad:
                bad.append(problem)
            else:
                raise DataError(f"{problem}; fix the row, or set skip_bad = true to skip such rows")
        if bad:
            shown = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
            log.warning("image-captions: skipped %d of %d rows: %s", len(bad), len(rows), shown)

        files = sorted({file for _, file in good})
        if len(files) < MIN_IMAGES:
            raise DataError(
                f"{table}: {len(files)} readable images; need at least {MIN_IMAGES} (one each "
                "for train, val and test)"
            )
        channels = options.channels
        if channels is None:
            channels = 1 if all(modes[f] in GREY_MODES for f in files) else 3
        pixels = {f: _read(f, channels, options.image_size) for f in files}

        # split the images (not the rows), so an image's captions stay together
        order = np.random.default_rng(seed).permutation(len(files))
        n_val = max(1, round(options.val_fraction * len(files)))
        n_test = max(1, round(options.test_fraction * len(files)))
        split_of = np.empty(len(files), dtype=np.int64)
        split_of[order[:n_test]] = 2
        split_of[order[n_test : n_test + n_val]] = 1
        split_of[order[n_test + n_val :]] = 0
        index_of = {f: i for i, f in enumerate(files)}

        names = sorted({label for (_, _, _, label), _ in good if label})
        label_id = {name: i for i, name in enumerate(names)}
        images = torch.from_numpy(np.stack([pixels[file] for _, file in good]))
        captions = [caption for (_, _, caption, _), _ in good]
        labels = torch.tensor([label_id.get(label, -1) for (_, _, _, label), _ in good])
        which = [int(split_of[index_of[file]]) for _, file in good]
        parts = tuple([i for i, s in enumerate(which) if s == k] for k in range(3))
        if options.experts is not None:  # read (and checked) even when training on all rows
            expert_of = read_experts(options.experts, table, len(rows))[kept_rows]
            if options.expert is not None:
                parts = ([i for i in parts[0] if expert_of[i] == options.expert], *parts[1:])
            if not parts[0]:
                found = sorted(set(expert_of.tolist()))
                raise DataError(
                    f"{options.experts}: expert {options.expert} has no training rows of "
                    f"{table}; its experts are {', '.join(map(str, found))}"
                )
        return caption_splits(images, captions, labels, parts, names, options, seed)  # type: ignore[arg-type]
