"""Videos with time-stamped captions: synthetic moving shapes, and videos read from files.

Both datasets give every split as one tuple ``(videos, tokens, spans, caption_mask)``:

==============  =====================  ==================================================
tensor          shape, dtype           meaning
==============  =====================  ==================================================
videos          [N, T, C, H, W] float  N videos of T frames, pixels in [0, 1]
tokens          [N, M, L] int64        M captions per video, ``L = text_length`` token ids
                                       (``captions.encode``: [BOS] ... [EOS], pad id 0)
spans           [N, M, 2] float32      each caption's (start, end) in frames of the
                                       T-frame video: frame i covers [i, i + 1), end is
                                       exclusive, 0 <= start < end <= T
caption_mask    [N, M] bool            True for a real caption; padding rows hold pad
                                       tokens and the span (0, 0)
==============  =====================  ==================================================

The spec is ``DataSpec("video_text", "video-text", (T, C, H, W), vocab_size=...,
text_length=L)``. Videos are split at random (fixed by the seed) into train/val/test;
the caption tokenizer (``captions.train_tokenizer``) is trained on the train split's
captions only.

``moving-shapes`` draws videos on the fly: in each video ``events`` shapes appear one
after another, each for a stretch of frames during which it moves straight across the
frame, and each is captioned (e.g. "a big red square moves left") with that stretch.

``video-captions`` reads a JSONL file of captions, one per line::

    {"video": "clips/cat", "caption": "a cat jumps", "start": 1.5, "end": 4.0}

``video`` is a folder of frame images (PNG, JPG, ... in natural name order, so
``frame_2.png`` comes before ``frame_10.png``) or a ``.npy`` array of frames shaped
(F, H, W) or (F, H, W, C) (uint8 0-255 or float 0-1), relative to ``videos`` (default:
the JSONL file's folder). ``start``/``end`` are seconds; ``fps`` converts them to frames
of the source video. Every video is resampled to ``frames`` evenly spaced frames and its
spans are rescaled to match; frames are resized to ``size`` x ``size``. An unreadable
video or caption line is a ``DataError`` naming the file (and line); with
``skip_bad = true`` it is skipped and the skips are counted in a warning instead.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Dataset, DataSpec, Splits
from autoplat.plugins.datasets.image_folder import IMAGE_SUFFIXES, _read
from autoplat.plugins.datasets.splits import DataOptions, SplitOptions

log = logging.getLogger(__name__)

TASK = "video_text"
MODALITY = "video-text"


class TextOptions(SplitOptions):
    """How captions become tokens, and the split fractions."""

    vocab_size: int = Field(96, ge=32, le=100_000, description="largest tokenizer vocabulary")
    text_length: int = Field(10, ge=3, le=512, description="tokens per caption (padded)")


# -- shared: split by video, tokenize ------------------------------------------------
def split_videos(
    videos: np.ndarray,
    captions: list[list[str]],
    spans: list[list[tuple[float, float]]],
    options: TextOptions,
    seed: int,
) -> Splits:
    """Split videos and their captions at random into the layout of the module docstring.

    Args:
        videos: float32 [N, T, C, H, W] in [0, 1].
        captions: Each video's captions (at least one each).
        spans: Each caption's (start, end) in frames of the T-frame video.
        options: Split fractions, vocabulary size and text length.
        seed: The same seed gives the same split (and tokenizer).

    Raises:
        DataError: Too few videos for every split to hold one.
    """
    from autoplat.plugins.datasets.captions import encode, train_tokenizer

    n = len(videos)
    n_val = max(1, round(n * options.val_fraction))
    n_test = max(1, round(n * options.test_fraction))
    if n - n_val - n_test < 1:
        raise DataError(
            f"{n} videos cannot be split into train, val and test (val_fraction "
            f"{options.val_fraction}, test_fraction {options.test_fraction}); add videos"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    train_captions = [c for i in parts["train"] for c in captions[i]]
    tokenizer = train_tokenizer(train_captions, options.vocab_size, seed)
    m = max(len(c) for c in captions)
    length = options.text_length

    def part(idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        tokens = torch.zeros(len(idx), m, length, dtype=torch.long)
        span = torch.zeros(len(idx), m, 2, dtype=torch.float32)
        mask = torch.zeros(len(idx), m, dtype=torch.bool)
        for row, i in enumerate(idx):
            k = len(captions[i])
            tokens[row, :k] = encode(tokenizer, captions[i], length)
            span[row, :k] = torch.tensor(spans[i], dtype=torch.float32)
            mask[row, :k] = True
        return torch.from_numpy(np.ascontiguousarray(videos[idx])), tokens, span, mask

    spec = DataSpec(
        TASK,
        MODALITY,
        tuple(int(s) for s in videos.shape[1:]),
        vocab_size=tokenizer.get_vocab_size(),
        text_length=length,
        tokenizer=tokenizer.to_str(),
    )
    return Splits(
        train=part(parts["train"]), val=part(parts["val"]), test=part(parts["test"]), spec=spec
    )


# -- moving-shapes -------------------------------------------------------------------
COLORS = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 0.9, 0.1),
    "blue": (0.2, 0.3, 1.0),
    "yellow": (1.0, 0.9, 0.1),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SIZES = {"small": 0.11, "big": 0.2}  # radius as a fraction of the frame size
VERBS = ("moves", "slides", "goes")


class MovingShapesOptions(TextOptions):
    """How many videos, how long and how large, and how many captioned events each has."""

    videos: int = Field(240, ge=12, le=100_000, description="number of videos")
    frames: int = Field(16, ge=4, le=256, description="frames per video (T)")
    size: int = Field(32, ge=12, le=256, description="frames are size x size RGB")
    events: int = Field(3, ge=1, le=16, description="captioned events per video (M)")

    @model_validator(mode="after")
    def _room(self) -> MovingShapesOptions:
        if self.frames < 2 * self.events:
            raise ValueError(
                f"{self.events} events need at least {2 * self.events} frames, got {self.frames}"
            )
        return self


def _event_spans(rng: np.random.Generator, n: int, frames: int, events: int) -> np.ndarray:
    """int [n, events, 2]: consecutive stretches of at least 2 frames, in time order."""
    segment = np.full((n, events), frames // events)
    segment[:, : frames % events] += 1  # equal segments; the events fill part of each
    seg_start = np.concatenate([np.zeros((n, 1), int), np.cumsum(segment, 1)[:, :-1]], 1)
    length = rng.integers(2, segment + 1)  # in [2, segment]
    offset = rng.integers(0, segment - length + 1)
    start = seg_start + offset
    return np.stack([start, start + length], axis=-1)


def render_moving_shapes(
    n: int, frames: int, size: int, events: int, seed: int
) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """Videos float32 [n, frames, 3, size, size], captions [n][events], spans [n, events, 2].

    The same arguments give the same videos and captions.
    """
    rng = np.random.default_rng(seed)
    spans = _event_spans(rng, n, frames, events)
    color = rng.integers(0, len(COLORS), (n, events))
    shape = rng.integers(0, len(SHAPES), (n, events))
    direction = rng.integers(0, len(DIRECTIONS), (n, events))
    big = rng.integers(0, 2, (n, events))
    verb = rng.integers(0, len(VERBS), (n, events))
    across = rng.uniform(0.3, 0.7, (n, events))  # the fixed coordinate, as a fraction
    radius = np.where(big == 1, SIZES["big"], SIZES["small"]) * size

    # per frame: which event is on screen (-1: none), where, and how it looks
    t = np.arange(frames)
    active = np.full((n, frames), -1)
    for k in range(events):
        on = (t >= spans[:, k, :1]) & (t < spans[:, k, 1:])
        active[on] = k
    visible = active >= 0
    ev = np.maximum(active, 0)

    def per_frame(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values, ev, axis=1)

    start, end = per_frame(spans[..., 0]), per_frame(spans[..., 1])
    progress = (t - start) / np.maximum(end - start - 1, 1)  # 0 -> 1 over the event
    r = per_frame(radius)
    lo, hi = r + 0.5, size - 1.5 - r
    dirs = np.array(list(DIRECTIONS.values()))
    dx, dy = dirs[per_frame(direction)].transpose(2, 0, 1)
    along = np.where(np.maximum(dx, dy) > 0, lo + (hi - lo) * progress, hi - (hi - lo) * progress)
    fixed = lo + (hi - lo) * per_frame(across)
    cx = np.where(dx != 0, along, fixed).astype(np.float32)
    cy = np.where(dy != 0, along, fixed).astype(np.float32)
    r = r.astype(np.float32)
    kind = per_frame(shape)
    rgb = np.array(list(COLORS.values()), dtype=np.float32)[per_frame(color)]  # [n, T, 3]

    grid = np.arange(size, dtype=np.float32)
    videos = np.zeros((n, frames, 3, size, size), dtype=np.float32)
    chunk = max(1, 2**22 // (frames * size * size))
    for a in range(0, n, chunk):
        s = slice(a, a + chunk)
        ox = grid[None, None, None, :] - cx[s, :, None, None]
        oy = grid[None, None, :, None] - cy[s, :, None, None]
        rr = r[s, :, None, None]
        square = np.maximum(np.abs(ox), np.abs(oy)) <= rr * 0.85
        circle = ox**2 + oy**2 <= rr**2
        triangle = (np.abs(oy) <= rr) & (np.abs(ox) <= (oy + rr) / 2)
        k = kind[s, :, None, None]
        inside = np.where(k == 0, square, np.where(k == 1, circle, triangle))
        inside &= visible[s, :, None, None]
        videos[s] = inside[:, :, None] * rgb[s, :, :, None, None]

    names = (list(COLORS), list(DIRECTIONS), list(SIZES))
    captions = [
        [
            f"a {names[2][big[i, k]]} {names[0][color[i, k]]} {SHAPES[shape[i, k]]} "
            f"{VERBS[verb[i, k]]} {names[1][direction[i, k]]}"
            for k in range(events)
        ]
        for i in range(n)
    ]
    return videos, captions, spans.astype(np.float32)


class MovingShapes(Dataset):
    """Synthetic videos of shapes moving across the frame, with a caption per movement.

    Options: videos, frames, size, events, vocab_size, text_length, val_fraction,
    test_fraction. Layout of the splits: the module docstring.
    """

    name: ClassVar[str] = "moving-shapes"
    tasks: ClassVar[tuple[str, ...]] = (TASK,)
    modality: ClassVar[str] = MODALITY
    Options: ClassVar[type[MovingShapesOptions]] = MovingShapesOptions

    def load(self, options: MovingShapesOptions, seed: int) -> Splits:
        """Draw the videos (fixed by ``seed``) and split them; the same seed, the same splits."""
        videos, captions, spans = render_moving_shapes(
            options.videos, options.frames, options.size, options.events, seed
        )
        span_list = [[tuple(s) for s in row] for row in spans.tolist()]
        return split_videos(videos, captions, span_list, options, seed)


# -- video-captions: files -----------------------------------------------------------
class VideoCaptionsOptions(DataOptions, TextOptions):
    """Where the captions and videos are, and how videos become tensors."""

    videos: Path | None = Field(
        None, description="folder the JSONL 'video' paths are relative to; default: its folder"
    )
    frames: int = Field(16, ge=1, le=1024, description="each video is resampled to T frames")
    size: int = Field(32, ge=1, le=1024, description="frames are resized to size x size")
    channels: Literal[1, 3] = Field(3, description="1: grey, 3: RGB")
    fps: float = Field(1.0, gt=0, description="frames per second of the source videos")
    vocab_size: int = Field(1000, ge=32, le=100_000)
    text_length: int = Field(16, ge=3, le=512)
    skip_bad: bool = Field(False, description="skip unreadable videos and captions, with a count")

    @field_validator("videos")
    @classmethod
    def _absolute_videos(cls, path: Path | None) -> Path | None:
        # Ray runs trials in their own working directories: fix the path now.
        return None if path is None else path.expanduser().absolute()


def _natural_key(path: Path) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name.lower())]


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ),
        key=_natural_key,
    )
    if not files:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"video folder {folder} holds no frame images (files ending in {kinds})")
    return files


def _pick(count: int, frames: int) -> np.ndarray:
    """``frames`` evenly spaced indices into ``count`` source frames (repeats when fewer)."""
    return np.minimum(((np.arange(frames) + 0.5) * count / frames).astype(int), count - 1)


def _read_npy(path: Path, options: VideoCaptionsOptions) -> tuple[np.ndarray, int]:
    """A .npy video as float32 [frames, C, size, size] and its source frame count."""
    import torch.nn.functional as F

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the .npy video ({exc}); replace it") from None
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3) or 0 in array.shape:
        raise DataError(
            f"{path}: a .npy video must be shaped (frames, H, W) or (frames, H, W, 1 or 3), "
            f"got {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: a .npy video must hold numbers, got dtype {array.dtype}")
    count = len(array)
    x = array[_pick(count, options.frames)].astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        x /= 255.0
    if not np.isfinite(x).all():
        raise DataError(f"{path}: the .npy video holds NaN or infinite values")
    x = np.clip(x, 0.0, 1.0)
    if x.shape[-1] != options.channels:
        x = x.mean(-1, keepdims=True) if options.channels == 1 else np.repeat(x, 3, axis=-1)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    if t.shape[-2:] != (options.size, options.size):
        t = F.interpolate(t, size=(options.size, options.size), mode="bilinear", antialias=True)
    return t.clamp(0, 1).numpy(), count


def read_video(path: Path, options: VideoCaptionsOptions) -> tuple[np.ndarray, int]:
    """A video (frame folder or .npy) as float32 [frames, C, size, size] in [0, 1], and
    how many frames the source has.

    Raises:
        DataError: The video is missing, empty, of an unknown kind or unreadable; the
            message names the file.
    """
    if path.is_dir():
        files = _frame_files(path)
        chosen = [files[i] for i in _pick(len(files), options.frames)]
        cache: dict[Path, np.ndarray] = {}
        for f in chosen:
            if f not in cache:
                cache[f] = _read(f, options.channels, options.size)
        return np.stack([cache[f] for f in chosen]), len(files)
    if path.suffix.lower() == ".npy" and path.is_file():
        return _read_npy(path, options)
    if not path.exists():
        raise DataError(f"video {path} does not exist")
    raise DataError(f"video {path} is neither a folder of frame images nor a .npy file")


def _parse_line(line: str, where: str) -> tuple[str, str, float, float]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with video, caption, start and end")
    missing = [k for k in ("video", "caption", "start", "end") if k not in row]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}")
    video, caption, start, end = row["video"], row["caption"], row["start"], row["end"]
    if not isinstance(video, str) or not video:
        raise DataError(f"{where}: 'video' must be a non-empty path string")
    if not isinstance(caption, str) or not caption.strip():
        raise DataError(f"{where}: 'caption' must be non-empty text")
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in (start, end)
    )
    if not numbers or not 0 <= start < end:
        raise DataError(
            f"{where}: 'start' and 'end' must be seconds with 0 <= start < end, got "
            f"{start!r} and {end!r}"
        )
    return video, caption.strip(), float(start), float(end)


class VideoCaptions(Dataset):
    """Videos (frame folders or .npy files) with time-stamped captions from a JSONL file.

    Options: path (the JSONL file), videos, frames, size, channels, fps, vocab_size,
    text_length, skip_bad, val_fraction, test_fraction. Layout: the module docstring.
    """

    name: ClassVar[str] = "video-captions"
    tasks: ClassVar[tuple[str, ...]] = (TASK,)
    modality: ClassVar[str] = MODALITY
    Options: ClassVar[type[VideoCaptionsOptions]] = VideoCaptionsOptions

    def load(self, options: VideoCaptionsOptions, seed: int) -> Splits:
        """Read the captions and their videos and split by video; the same seed, the same splits.

        Raises:
            DataError: The JSONL file is missing or a line of it is invalid, a video is
                missing or unreadable, a caption starts after its video ends (each unless
                ``skip_bad``), or fewer than 3 videos remain.
        """
        path = options.path
        if not path.is_file():
            raise DataError(
                f"captions file {path} does not exist or is not a file; [dataset] path must "
                "be a JSONL file of {video, caption, start, end} lines"
            )
        root = options.videos or path.parent
        bad: list[str] = []

        def fail(message: str) -> None:
            if not options.skip_bad:
                raise DataError(message + "; fix it, or set skip_bad = true to skip it")
            bad.append(message)

        by_video: dict[str, list[tuple[str, float, float, str]]] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the captions file ({exc})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                video, caption, start, end = _parse_line(line, where)
            except DataError as exc:
                fail(str(exc))
                continue
            by_video.setdefault(video, []).append((caption, start, end, where))
        if not by_video and not bad:
            raise DataError(f"captions file {path} holds no captions")

        videos: list[np.ndarray] = []
        captions: list[list[str]] = []
        spans: list[list[tuple[float, float]]] = []
        for name in sorted(by_video):
            try:
                frames, count = read_video(root / name, options)
            except DataError as exc:
                fail(f"{exc} (named at {by_video[name][0][3]})")
                continue
            scale = options.fps * options.frames / count  # seconds -> resampled frames
            kept: list[tuple[str, tuple[float, float]]] = []
            for caption, start, end, where in by_video[name]:
                if start * options.fps >= count:
                    fail(
                        f"{where}: the caption starts at {start} s, after its video {root / name} "
                        f"ends ({count} frames at fps {options.fps} = {count / options.fps:g} s)"
                    )
                    continue
                span = (start * scale, min(end * scale, float(options.frames)))
                kept.append((caption, span))
            if kept:
                videos.append(frames)
                captions.append([c for c, _ in kept])
                spans.append([s for _, s in kept])
        if bad:
            shown = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
            log.warning("video-captions: skipped %d bad entries of %s: %s", len(bad), path, shown)
        self.skipped = list(bad)
        if len(videos) < 3:
            raise DataError(
                f"{path}: only {len(videos)} readable videos with captions; train, val and "
                "test need at least 3"
            )
        return split_videos(np.stack(videos), captions, spans, options, seed)
