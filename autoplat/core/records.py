"""Record files for ``platform curate``: read Parquet, JSONL, CSV and image folders in
chunks of bounded size, and write a kept subset in the input's own format.

Every reader error is a ``DataError`` naming the file and the row (or line) at fault.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Chunk

FORMATS = ("parquet", "jsonl", "csv", "images")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SUFFIXES |= {".csv": "csv", ".tsv": "csv"}


def infer_format(path: Path) -> str:
    """The format of ``path`` from its suffix (a folder holds images)."""
    if path.is_dir():
        return "images"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix '{path.suffix}'; use .parquet, "
            f".jsonl, .csv or a folder of images, or set [input].format to one of {FORMATS}"
        )
    return fmt


@dataclass
class Part:
    """One chunk as the scorers see it and as the writer copies it (``raw``)."""

    chunk: Chunk
    raw: Any  # parquet: pa.Table; jsonl: list of lines; csv: list of rows; images: paths


class RecordFile:
    """A record file (or image folder) read in chunks of ``chunk_size`` records.

    ``text`` names the column (JSONL key) holding each record's text; for an image
    folder, records are image paths. Null or missing-in-JSON text is an error naming
    the row, except an explicit null, which reads as "".
    """

    def __init__(
        self, path: str | Path, text: str | None, chunk_size: int = 4096, fmt: str = "auto"
    ) -> None:
        self.path = Path(path)
        self.text = text
        self.chunk_size = chunk_size
        if not self.path.exists():
            raise DataError(f"input '{self.path}' not found; check [input].path")
        self.format = infer_format(self.path) if fmt == "auto" else fmt
        if self.format not in FORMATS:
            raise DataError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
        if self.format != "images" and self.path.is_dir():
            raise DataError(f"{self.path} is a folder; format '{self.format}' needs a file")
        if self.format != "images" and self.path.stat().st_size == 0:
            raise DataError(f"{self.path} is empty: no records to curate")
        if self.format != "images" and not text:
            raise DataError(f"{self.path}: name the text column with [input].text")
        self._count: int | None = None
        self.header = self._csv_header() if self.format == "csv" else None

    # -- reading --------------------------------------------------------------------
    def __len__(self) -> int:
        """How many records (a cheap pass for JSONL/CSV: lines are counted, not parsed)."""
        if self._count is None:
            self._count = sum(len(part.chunk) for part in self.parts())
        return self._count

    def parts(self, skip: int = 0) -> Iterator[Part]:
        """The chunks in order, after the first ``skip`` (read, so errors still show)."""
        reader = {
            "parquet": self._parquet,
            "jsonl": self._jsonl,
            "csv": self._csv,
            "images": self._images,
        }[self.format]
        for index, part in enumerate(reader()):
            if index >= skip:
                yield part

    def texts(self) -> Iterator[list[str]]:
        """Only the text of each chunk."""
        for part in self.parts():
            yield part.chunk.text or part.chunk.images or []

    def _chunk(self, start: int, texts: list[str]) -> Chunk:
        ids = np.arange(start, start + len(texts), dtype=np.int64)
        if self.format == "images":
            return Chunk(ids=ids, images=texts)
        return Chunk(ids=ids, text=texts)

    def _parquet(self) -> Iterator[Part]:
        try:
            file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from None
        names = file.schema_arrow.names
        if self.text not in names:
            raise DataError(
                f"{self.path}: no column '{self.text}'; columns are {', '.join(names)}. "
                "Set [input].text to the column holding the text"
            )
        start = 0
        batches = file.iter_batches(batch_size=self.chunk_size)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(
                    f"{self.path}: unreadable after row {start} (truncated or corrupt "
                    f"Parquet?): {exc}"
                ) from None
            table = pa.Table.from_batches([batch])
            texts = self._parquet_texts(table.column(self.text), start)
            yield Part(self._chunk(start, texts), table)
            start += len(texts)

    def _parquet_texts(self, column: pa.ChunkedArray, start: int) -> list[str]:
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            values = column.to_pylist()
            for i, value in enumerate(values):
                try:
                    values[i] = "" if value is None else value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{self.path}: row {start + i + 1}, column '{self.text}': not valid "
                        f"UTF-8 ({exc.reason} at byte {exc.start}); re-encode the file as UTF-8"
                    ) from None
            return values
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise DataError(
                f"{self.path}: column '{self.text}' holds {column.type}, not text; "
                "set [input].text to a string column"
            )
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            return self._parquet_texts(column.cast(pa.binary()), start)
        return ["" if value is None else value for value in column.to_pylist()]

    def _lines(self) -> Iterator[tuple[int, str]]:
        """Decoded lines with their 1-based numbers; non-UTF-8 bytes name the line."""
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{self.path}:{number}: not valid UTF-8 ({exc.reason} at byte "
                        f"{exc.start} of the line); re-encode the file as UTF-8"
                    ) from None

    def _jsonl(self) -> Iterator[Part]:
        lines: list[str] = []
        texts: list[str] = []
        start = 0
        for number, line in self._lines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{self.path}:{number}: each line must be a JSON object")
            if self.text not in record:
                raise DataError(
                    f"{self.path}:{number}: no key '{self.text}' (keys: "
                    f"{', '.join(record) or 'none'}); set [input].text"
                )
            value = record[self.text]
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{self.path}:{number}: '{self.text}' is {type(value).__name__}, not text"
                )
            lines.append(line if line.endswith("\n") else line + "\n")
            texts.append(value or "")
            if len(texts) == self.chunk_size:
                yield Part(self._chunk(start, texts), lines)
                start, lines, texts = start + len(texts), [], []
        if texts:
            yield Part(self._chunk(start, texts), lines)

    @property
    def delimiter(self) -> str:
        """CSV field separator: a tab for .tsv files."""
        return "\t" if self.path.suffix.lower() == ".tsv" else ","

    def header_line(self) -> str:
        """The CSV header as one line, for the kept subset."""
        text = io.StringIO()
        csv.writer(text, delimiter=self.delimiter).writerow(self.header)
        return text.getvalue()

    def _csv_header(self) -> list[str]:
        header = next(csv.reader((ln for _, ln in self._lines()), delimiter=self.delimiter), None)
        if not header:
            raise DataError(f"{self.path} has no header row; the first line names the columns")
        if self.text not in header:
            raise DataError(
                f"{self.path}:1: no column '{self.text}'; columns are {', '.join(header)}. "
                "Set [input].text to the column holding the text"
            )
        return header

    def _csv(self) -> Iterator[Part]:
        numbered = self._lines()
        current = [0]

        def lines() -> Iterator[str]:
            for number, line in numbered:
                current[0] = number
                yield line

        delimiter = self.delimiter
        reader = csv.reader(lines(), delimiter=delimiter)
        header = next(reader)
        column = header.index(self.text)
        rows: list[list[str]] = []
        start = 0
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{self.path}:{current[0]}: {len(row)} fields where the header has "
                        f"{len(header)}; quote fields that contain '{delimiter}'"
                    )
                rows.append(row)
                if len(rows) == self.chunk_size:
                    yield Part(self._chunk(start, [r[column] for r in rows]), rows)
                    start, rows = start + len(rows), []
        except csv.Error as exc:
            raise DataError(f"{self.path}:{current[0]}: malformed CSV ({exc})") from None
        if rows:
            yield Part(self._chunk(start, [r[column] for r in rows]), rows)

    def _images(self) -> Iterator[Part]:
        paths = sorted(str(p) for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(
                f"{self.path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found"
            )
        for start in range(0, len(paths), self.chunk_size):
            batch = paths[start : start + self.chunk_size]
            yield Part(self._chunk(start, batch), batch)


def kept_suffix(source: RecordFile) -> str:
    """The file suffix of a kept subset: the input's own; a list of paths for images."""
    return ".txt" if source.format == "images" else source.path.suffix


def sync_dir(folder: Path) -> None:
    """fsync a folder, so a rename in it survives a power loss (where the OS allows)."""
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def durable(path: Path) -> Iterator[Path]:
    """A temporary name (``path`` + ``.tmp``) to write; on success it is fsynced and renamed
    to ``path``, so ``path`` is never seen half-written, even after a crash or power loss."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path``, durably (temporary name, fsync, rename)."""
    with durable(path) as tmp:
        tmp.write_text(json.dumps(value))


def write_kept(source: RecordFile, part: Part, keep: np.ndarray, path: Path) -> None:
    """Write the kept records of one part to ``path``, durably (CSV parts have no header)."""
    rows = np.flatnonzero(keep)
    with durable(path) as tmp:
        if source.format == "parquet":
            pq.write_table(part.raw.take(pa.array(rows, type=pa.int64())), tmp)
            return
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if source.format == "csv":
                csv.writer(f, delimiter=source.delimiter).writerows(part.raw[i] for i in rows)
            elif source.format == "jsonl":
                f.writelines(part.raw[i] for i in rows)
            else:
                f.writelines(part.raw[i] + "\n" for i in rows)


def merge_parts(parts: list[Path], out: Path, fmt: str, header: str | None = None) -> None:
    """Concatenate part files into ``out``, streaming (one part in memory at a time) and
    durably; ``header`` is written first (a CSV header line)."""
    with durable(out) as tmp:
        if fmt == "parquet":
            writer: pq.ParquetWriter | None = None
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:
                raise ValueError("no parts to merge")
            writer.close()
            return
        with open(tmp, "wb") as f:
            if header is not None:
                f.write(header.encode("utf-8"))
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 20):
                        f.write(block)


def count_rows(path: Path, fmt: str, delimiter: str = ",") -> int | None:
    """Records in a merged output (a CSV file has a header line); None when it is missing
    or unreadable."""
    try:
        if fmt == "parquet":
            return pq.ParquetFile(path).metadata.num_rows
        if fmt == "csv":
            with open(path, encoding="utf-8", newline="") as f:
                return max(sum(1 for _ in csv.reader(f, delimiter=delimiter)) - 1, 0)
        with open(path, "rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except (OSError, ValueError, csv.Error, pa.ArrowException):
        return None
