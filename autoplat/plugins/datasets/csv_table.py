"""A CSV file of numeric feature columns and a label column, for tabular classification.

The first row names the columns. Labels may be any text: when every label is an integer
they are ordered numerically, otherwise as text, and their order gives the label indices
(``DataSpec.label_names``). Features are standardised with the mean and standard
deviation of the train split (a constant column is only centred). Blank lines are
skipped; an empty cell or one of ``MISSING`` (any case) is a missing value, which is an
error, as is any cell that is not a finite number.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Dataset, DataSpec, Splits
from autoplat.plugins.datasets.splits import DataOptions, min_per_class, stratified_splits

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})
"""Cell texts (stripped, lower-cased) that mean a missing value."""


class CsvOptions(DataOptions):
    """Which file, which column holds the labels and which hold the features."""

    label: str = Field("label", min_length=1, description="name of the label column")
    features: list[str] | None = Field(
        None, min_length=1, description="feature columns; default: every other column"
    )


def _column(path: Path, wanted: str, header: list[str], what: str) -> int:
    """The index of column ``wanted``; a DataError with a close match when it is absent."""
    if wanted in header:
        return header.index(wanted)
    close = difflib.get_close_matches(wanted, header, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise DataError(
        f"{path}: no column '{wanted}' ({what}); {hint}The columns are: {', '.join(header)}"
    )


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the non-blank rows and each row's line number.

    Raises:
        DataError: The file is missing, unreadable or empty, has unnamed or repeated
            columns, no data rows, or a row with the wrong number of fields.
    """
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"CSV file {path} {what}; check [dataset] path")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            rows, lines = [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(row)} fields, but the header has "
                        f"{len(header)}; every row needs one value per column"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read it as a UTF-8 CSV file ({exc})") from None
    if not header:
        raise DataError(f"{path} is empty; the first row must name the columns")
    if "" in header:
        raise DataError(
            f"{path}:1: column {header.index('') + 1} has no name; name every column (a "
            "pandas index? write the file with to_csv(..., index=False))"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}:1: repeated column names {repeated}; give each column its own")
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    return header, rows, lines


def _bad_cell(path: Path, line: int, column: str, cell: str) -> DataError:
    """The error for a feature cell that is not a finite number."""
    where = f"{path}:{line}: column '{column}'"
    if cell.strip().lower() in MISSING:
        return DataError(f"{where}: missing value; fill it in or delete the row")
    return DataError(
        f"{where}: {cell!r} is not a finite float32 number; features must be numbers (encode "
        "categories as numbers, or leave the column out with [dataset] features = [...])"
    )


def _float(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float("nan")


def read_table(options: CsvOptions) -> tuple[np.ndarray, np.ndarray, DataSpec, list[int]]:
    """Features (N, D) float32, label indices (N,), the spec of the CSV file and each
    row's line number.

    Raises:
        DataError: See ``CsvTable.load``.
    """
    path = options.path
    header, rows, lines = _read_rows(path)
    label_at = _column(path, options.label, header, "the label column, [dataset] label")
    names = options.features or [name for name in header if name != options.label]
    if options.label in names:
        raise DataError(f"[dataset] features lists the label column '{options.label}'; remove it")
    if not names:
        raise DataError(f"{path} has no columns besides the label '{options.label}'")
    columns = [_column(path, name, header, "listed in [dataset] features") for name in names]

    labels = [row[label_at].strip() for row in rows]
    for line, label in zip(lines, labels, strict=True):
        if label.lower() in MISSING:
            raise DataError(
                f"{path}:{line}: column '{options.label}': the label is missing; fill it in "
                "or delete the row"
            )
    if all(label.lstrip("+-").isdecimal() for label in labels):
        label_names = sorted(set(labels), key=int)
    else:
        label_names = sorted(set(labels))
    index = {name: i for i, name in enumerate(label_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)

    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        x = np.array([[_float(row[j]) for j in columns] for row in rows], dtype=np.float32)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise _bad_cell(path, lines[i], names[j], rows[i][columns[j]])
    num_classes = len(label_names)
    spec = DataSpec("classification", "tabular", (len(names),), num_classes, tuple(label_names))
    return x, y, spec, lines


class CsvTable(Dataset):
    """A CSV of numeric features and a label; options: path, label, features, fractions."""

    name: ClassVar[str] = "csv"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    modality: ClassVar[str] = "tabular"
    Options: ClassVar[type[CsvOptions]] = CsvOptions

    def load(self, options: CsvOptions, seed: int) -> Splits:
        """Read the file, split it stratified and standardise features with train statistics.

        Raises:
            DataError: The file is missing, empty or not a CSV; a named column is absent;
                a feature is missing or not a number (the line and column are named);
                there are fewer than 2 classes, or a class has too few rows to split.
        """
        x, y, spec, lines = read_table(options)
        if spec.num_classes < 2:
            raise DataError(
                f"{options.path}: every row has the label {spec.label_names[0]!r}; "
                "classification needs at least 2 classes"
            )
        needed = min_per_class(options)
        counts = np.bincount(y, minlength=spec.num_classes)
        for name, count in zip(spec.label_names, counts.tolist(), strict=True):
            if count < needed:
                raise DataError(
                    f"{options.path}: class {name!r} has {count} rows; with val_fraction "
                    f"{options.val_fraction} and test_fraction {options.test_fraction} each "
                    f"class needs at least {needed} to split; add rows or raise the fractions"
                )
        sources = [f"{options.path}:{line}" for line in lines]
        splits = stratified_splits(x, y, options, seed, spec, sources)
        train = splits.train[0]
        mean = train.mean(dim=0)
        std = train.std(dim=0)
        std = torch.where(std > 0, std, torch.ones_like(std))

        def scaled(part: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return (part[0] - mean) / std, part[1]

        spec = dataclasses.replace(spec, input_scaling=(tuple(mean.tolist()), tuple(std.tolist())))
        return dataclasses.replace(
            splits,
            train=scaled(splits.train),
            val=scaled(splits.val),
            test=scaled(splits.test),
            spec=spec,
        )
