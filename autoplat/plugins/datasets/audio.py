"""Audio datasets: synthetic sound events, sound events paired with pictures, and WAV/FLAC
folders.

Waveforms are float32 (N, samples) in [-1, 1], mono, at ``sample_rate`` Hz, all
``duration`` seconds long (``DataSpec.input_shape == (samples,)``).

- ``sound-events`` (synthetic, seeded): one event per clip over Gaussian background
  noise at ``snr_db``; the label is the event type (``EVENTS``): a steady tone, an up or
  down chirp, a white-noise burst, a harmonic stack (a fundamental and 3-6 partials at
  1/k amplitude) or an amplitude-modulated tone (6-16 Hz). Pitch, onset, length and level
  vary at random (frequencies as fractions of the Nyquist frequency, so any rate works).
- ``audio-visual-events`` (synthetic, seeded): each class is a (sound, shape) pair of
  ``AV_SOUNDS`` x ``AV_SHAPES``, e.g. "chirp-square": a chirp heard with a square seen
  (random colour, size, place and pixel noise). The sound alone leaves two classes open
  (at most 50% accuracy), the picture three (at most 33%); only both name the class, so
  fusion must beat either modality. ``noisy_pairs`` is the share of examples where one
  modality, chosen at random, carries no signal (silence in noise, or a blank picture),
  so a model must also cope with one missing cue. With ``modality = "audio-image"`` the
  splits are ``(waveforms, images, labels)`` and ``input_shape`` is ``(samples, 3, S,
  S)``: the audio shape followed by the image shape; ``"audio"`` or ``"image"`` give
  ordinary ``(inputs, labels)`` classification data of one modality.
- ``audio-folder``: real files listed in a CSV with columns ``path,label`` (``path`` is
  the CSV itself or a folder holding ``labels.csv``; file paths are relative to the
  CSV's folder). Files are read with soundfile (WAV, FLAC, OGG, ...), mixed to mono,
  resampled to ``sample_rate`` with scipy's polyphase filter (``resample_poly``), then
  cropped to the first ``duration`` seconds or zero-padded at the end. A missing,
  unreadable or empty file, or an empty label, is a DataError naming the CSV line and the
  file; ``skip_bad = true`` skips such rows and logs how many. The split is stratified.
"""

from __future__ import annotations

import csv
import logging
from fractions import Fraction
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Dataset, DataSpec, Options, Splits
from autoplat.plugins.datasets.shapes import COLORS, shape_mask
from autoplat.plugins.datasets.splits import DataOptions, min_per_class, stratified_splits

log = logging.getLogger(__name__)

EVENTS = ("tone", "chirp_up", "chirp_down", "noise_burst", "harmonic", "am_tone")
AV_SOUNDS = ("tone", "chirp", "noise")
AV_SHAPES = ("circle", "cross")
AV_CLASSES = tuple(f"{sound}-{shape}" for sound in AV_SOUNDS for shape in AV_SHAPES)
_AV_EVENT = {"tone": "tone", "chirp": "chirp_up", "noise": "noise_burst"}
SILENCE_NOISE = 0.02  # std of the background noise of a clip without an event


# -- synthesis ---------------------------------------------------------------------------
def synthesize(event: str, samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One event of type ``event`` (see ``EVENTS``) inside a silent clip, float64, peak 1."""
    nyquist = sample_rate / 2
    length = max(8, int(samples * rng.uniform(0.5, 0.9)))
    onset = int(rng.integers(0, samples - length + 1))
    t = np.arange(length) / sample_rate
    if event in ("tone", "am_tone"):
        wave = np.sin(2 * np.pi * rng.uniform(0.08, 0.6) * nyquist * t + rng.uniform(0, 2 * np.pi))
        if event == "am_tone":
            wave *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(6, 16) * t)
    elif event in ("chirp_up", "chirp_down"):
        low = rng.uniform(0.05, 0.25) * nyquist
        high = min(low * rng.uniform(2.0, 3.5), 0.9 * nyquist)
        f0, f1 = (low, high) if event == "chirp_up" else (high, low)
        duration = length / sample_rate
        wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))
    elif event == "noise_burst":
        wave = rng.standard_normal(length)
    elif event == "harmonic":
        f0 = rng.uniform(0.04, 0.12) * nyquist
        partials = [k for k in range(1, int(rng.integers(4, 8))) if k * f0 < 0.9 * nyquist]
        wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in partials)
    else:
        raise ValueError(f"unknown event {event!r}; known: {', '.join(EVENTS)}")
    ramp = max(1, min(int(0.01 * sample_rate), length // 4))  # raised-cosine fade in/out
    fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    wave[:ramp] *= fade
    wave[length - ramp :] *= fade[::-1]
    clip = np.zeros(samples)
    clip[onset : onset + length] = wave / max(1e-9, np.abs(wave).max())
    return clip


def mix(
    events: list[str | None],
    samples: int,
    sample_rate: int,
    snr_db: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Clips (N, samples) float32 in [-1, 1]: each event at a random peak level (0.2-0.6)
    over white noise at ``snr_db`` below its RMS; ``None`` is background noise alone."""
    clips = np.zeros((len(events), samples), dtype=np.float32)
    for k, event in enumerate(events):
        if event is None:
            clips[k] = rng.normal(0.0, SILENCE_NOISE, samples)
            continue
        clip = synthesize(event, samples, sample_rate, rng) * rng.uniform(0.2, 0.6)
        rms = np.sqrt(np.mean(clip[clip != 0] ** 2))
        clips[k] = clip + rng.normal(0.0, rms / 10 ** (snr_db / 20), samples)
    return np.clip(clips, -1.0, 1.0)


def draw_shapes(
    shapes: list[str | None], size: int, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Pictures (N, 3, size, size) float32 in [0, 1]: each shape in a random colour, size
    and place on black, plus pixel noise; ``None`` is noise alone."""
    images = np.zeros((len(shapes), 3, size, size), dtype=np.float32)
    palette = np.asarray(list(COLORS.values()), dtype=np.float32)
    for k, shape in enumerate(shapes):
        if shape is None:
            continue
        cx, cy = rng.uniform(0.35, 0.65, size=2) * size
        mask = shape_mask(shape, size, cx, cy, rng.uniform(0.22, 0.32) * size)
        images[k][:, mask] = palette[rng.integers(len(palette))][:, None]
    if noise:
        images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
    return np.clip(images, 0.0, 1.0)


# -- synthetic datasets ----------------------------------------------------------------------
class SoundOptions(Options):
    """Split sizes and how the clips sound."""

    n_train: int = Field(1000, ge=1, le=1_000_000)
    n_val: int = Field(200, ge=1, le=1_000_000)
    n_test: int = Field(200, ge=1, le=1_000_000)
    sample_rate: int = Field(8000, ge=1000, le=96_000, description="Hz")
    duration: float = Field(0.5, gt=0.01, le=10, description="seconds per clip")
    snr_db: float = Field(10.0, ge=-20, le=60, description="event RMS over background noise")


def _split(arrays: list[torch.Tensor], options: SoundOptions, spec: DataSpec) -> Splits:
    """Consecutive train/val/test parts of the generated ``arrays``."""
    a, b = options.n_train, options.n_train + options.n_val
    return Splits(
        train=tuple(x[:a] for x in arrays),
        val=tuple(x[a:b] for x in arrays),
        test=tuple(x[b:] for x in arrays),
        spec=spec,
    )


class SoundEvents(Dataset):
    """Synthetic sound events; label = event type. See the module docstring."""

    name: ClassVar[str] = "sound-events"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    modality: ClassVar[str] = "audio"
    Options: ClassVar[type[SoundOptions]] = SoundOptions

    def load(self, options: SoundOptions, seed: int) -> Splits:
        """Generate the splits; the same seed and options give the same tensors."""
        rng = np.random.default_rng(seed)
        n = options.n_train + options.n_val + options.n_test
        samples = round(options.sample_rate * options.duration)
        labels = rng.integers(len(EVENTS), size=n)
        clips = mix([EVENTS[i] for i in labels], samples, options.sample_rate, options.snr_db, rng)
        spec = DataSpec(
            "classification", "audio", (samples,), len(EVENTS), EVENTS,
            sample_rate=options.sample_rate,
        )  # fmt: skip
        return _split([torch.from_numpy(clips), torch.from_numpy(labels)], options, spec)


class AudioVisualOptions(SoundOptions):
    """Split sizes, the sound, the pictures and which modalities the splits hold."""

    image_size: int = Field(16, ge=8, le=256, description="pictures are image_size squared")
    image_noise: float = Field(0.05, ge=0, le=0.5, description="std of Gaussian pixel noise")
    noisy_pairs: float = Field(
        0.0, ge=0, le=1, description="share of examples with one modality (at random) blanked"
    )
    modality: Literal["audio-image", "audio", "image"] = Field(
        "audio-image", description="audio-image: (audio, images, labels); else one modality"
    )


class AudioVisualEvents(Dataset):
    """Sounds paired with pictures; label = (sound, shape) pair. See the module docstring."""

    name: ClassVar[str] = "audio-visual-events"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    modality: ClassVar[str] = "audio-image"
    Options: ClassVar[type[AudioVisualOptions]] = AudioVisualOptions

    def kind(self, options: AudioVisualOptions) -> tuple[str, tuple[str, ...]]:
        """Both modalities, or one of them, as ``modality`` says."""
        return options.modality, self.tasks

    def load(self, options: AudioVisualOptions, seed: int) -> Splits:
        """Generate the splits; the same seed and options give the same tensors."""
        rng = np.random.default_rng(seed)
        n = options.n_train + options.n_val + options.n_test
        samples = round(options.sample_rate * options.duration)
        labels = rng.integers(len(AV_CLASSES), size=n)
        sounds: list[str | None] = [_AV_EVENT[AV_SOUNDS[i // len(AV_SHAPES)]] for i in labels]
        shapes: list[str | None] = [AV_SHAPES[i % len(AV_SHAPES)] for i in labels]
        blank = rng.random(n) < options.noisy_pairs
        which = rng.random(n) < 0.5  # True: the sound is blanked, else the picture
        for k in np.flatnonzero(blank):
            if which[k]:
                sounds[k] = None
            else:
                shapes[k] = None
        audio = torch.from_numpy(mix(sounds, samples, options.sample_rate, options.snr_db, rng))
        images = torch.from_numpy(draw_shapes(shapes, options.image_size, options.image_noise, rng))
        y = torch.from_numpy(labels)
        image_shape = tuple(images.shape[1:])
        if options.modality == "audio":
            arrays, shape = [audio, y], (samples,)
        elif options.modality == "image":
            arrays, shape = [images, y], image_shape
        else:
            arrays, shape = [audio, images, y], (samples, *image_shape)
        spec = DataSpec(
            "classification", options.modality, shape, len(AV_CLASSES), AV_CLASSES,
            sample_rate=0 if options.modality == "image" else options.sample_rate,
        )  # fmt: skip
        return _split(arrays, options, spec)


# -- audio files ---------------------------------------------------------------------------------
class AudioFolderOptions(DataOptions):
    """Where the labels CSV is, how files become waveforms, the split and bad rows."""

    sample_rate: int = Field(8000, ge=1000, le=96_000, description="files are resampled to this")
    duration: float = Field(1.0, gt=0.01, le=600, description="seconds kept (cropped/padded)")
    skip_bad: bool = Field(False, description="skip rows whose file is missing or unreadable")


def find_labels(path: Path) -> Path:
    """The labels CSV at ``path``: the file itself, or ``labels.csv`` in the folder."""
    if not path.exists():
        raise DataError(f"{path} does not exist; set [dataset] path to a labels CSV or its folder")
    if path.is_dir():
        table = path / "labels.csv"
        if not table.is_file():
            raise DataError(
                f"folder {path} holds no labels.csv; add one with columns path,label (one "
                "row per audio file) or point [dataset] path at your CSV"
            )
        return table
    return path


def read_labels(table: Path) -> list[tuple[int, str, str]]:
    """The (line, path, label) rows of a labels CSV with a header line."""
    try:
        text = table.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{table}: cannot read the labels CSV ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ("path", "label") if c not in columns]
    if missing:
        raise DataError(
            f"{table}:1: the header lacks column(s) {', '.join(missing)}; it has "
            f"{', '.join(columns) or 'none'} (need path,label)"
        )
    rows = []
    for record in reader:
        record = {(k or "").strip(): (v or "").strip() for k, v in record.items()}
        rows.append((reader.line_num, record["path"], record["label"]))
    return rows


def read_audio(file: Path, sample_rate: int, samples: int) -> np.ndarray:
    """One file as mono float32 (samples,) at ``sample_rate``, cropped or zero-padded.

    Raises:
        DataError: soundfile cannot read the file, or it holds no samples.
    """
    import soundfile
    from scipy.signal import resample_poly

    try:
        data, rate = soundfile.read(file, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot read audio file {file} ({exc})") from None
    if data.size == 0:
        raise DataError(f"audio file {file} holds no samples")
    wave = data.mean(axis=1)
    if rate != sample_rate:
        ratio = Fraction(sample_rate, rate)
        wave = resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)
    out = np.zeros(samples, dtype=np.float32)
    kept = wave[:samples]
    out[: len(kept)] = kept
    return np.clip(out, -1.0, 1.0)


class AudioFolder(Dataset):
    """Labelled WAV/FLAC files listed in a CSV; see the module docstring."""

    name: ClassVar[str] = "audio-folder"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    modality: ClassVar[str] = "audio"
    Options: ClassVar[type[AudioFolderOptions]] = AudioFolderOptions

    def load(self, options: AudioFolderOptions, seed: int) -> Splits:
        """Read, resample and split the files; the same seed gives the same split.

        Raises:
            DataError: The CSV is missing or malformed, a row is bad (without
                ``skip_bad``), or a class has too few files for three splits.
        """
        table = find_labels(options.path)
        rows = read_labels(table)
        if not rows:
            raise DataError(f"{table}: the labels CSV has no rows")
        samples = round(options.sample_rate * options.duration)
        waves, labels, bad = [], [], []
        for number, written, label in rows:
            where = f"{table}:{number}"
            file = Path(written).expanduser()
            file = file if file.is_absolute() else table.parent / file
            try:
                if not written:
                    raise DataError("empty path")
                if not label:
                    raise DataError(f"empty label for {file}")
                if not file.is_file():
                    raise DataError(f"audio file {file} does not exist")
                waves.append(read_audio(file, options.sample_rate, samples))
                labels.append(label)
            except DataError as exc:
                if not options.skip_bad:
                    raise DataError(
                        f"{where}: {exc}; fix the row, or set skip_bad = true to skip such rows"
                    ) from None
                bad.append(f"{where}: {exc}")
        if bad:
            shown = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
            log.warning("audio-folder: skipped %d of %d rows: %s", len(bad), len(rows), shown)
        names = sorted(set(labels))
        counts = {name: labels.count(name) for name in names}
        need = min_per_class(options)
        few = [f"{name} ({count})" for name, count in counts.items() if count < need]
        if len(names) < 2 or few:
            raise DataError(
                f"{table}: need at least 2 classes with {need} readable files each for the "
                f"train/val/test split; got {len(names)} class(es)"
                + (f", too few files in: {', '.join(few)}" if few else "")
            )
        index = {name: i for i, name in enumerate(names)}
        y = np.asarray([index[label] for label in labels], dtype=np.int64)
        spec = DataSpec(
            "classification", "audio", (samples,), len(names), tuple(names),
            sample_rate=options.sample_rate,
        )  # fmt: skip
        return stratified_splits(np.stack(waves), y, options, seed, spec)
