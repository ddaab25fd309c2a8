"""Audio-visual scene transfer data: speech-like clips, the same clips in a scene, and a
condition clip (audio + a frame) from elsewhere in the same video.

Every split is the tuple ``(clean, in_scene, cond_audio, cond_frame, scene, video)``:

- ``clean`` (N, samples) float32: the "enhanced" clip (no reverberation, no ambience);
- ``in_scene`` (N, samples): the same source as recorded in its video's scene (the target);
- ``cond_audio`` (N, samples): a *different* clip of the same video, in the same scene;
- ``cond_frame`` (N, 3, S, S) float32 in [0, 1]: a frame of that video at the condition clip;
- ``scene`` (N,) int64: the scene the video was recorded in (``av-folder``: the video);
- ``video`` (N,) int64: the video, unique across splits.

``DataSpec``: task "scene-transfer", modality "audio-image", ``input_shape = (samples, 3,
S, S)`` (the audio shape followed by the frame shape, as ``audio-visual-events``),
``num_classes`` the number of scenes and ``sample_rate``. Splits hold disjoint videos.

``av-scenes`` generates "videos" offline (seeded, numpy only). ``SCENES`` lists the scene
archetypes; each has a recurring acoustic signature -- a room impulse response (a direct-
path impulse, then white noise under an exponential decay to -60 dB at the scene's RT60
holding as much energy: a 0 dB direct-to-reverberant ratio) and an ambient texture at a
scene-specific SNR: ``hum`` (mains hum at 50 or 60 Hz with harmonics), ``babble`` (five
far speech-like sources) or ``rain`` (high-passed noise with random droplet clicks) -- and
a visual signature: the frame's colour and stripe texture (orientation and period), with
per-frame brightness, stripe phase, a random foreground blob and pixel noise. A video
draws its scene, jitters its RT60 (+-15%) and SNR (+-2 dB), and holds ``clips_per_video``
sources: synthetic speech-like sounds (NOT real voices), 2-4 syllables, each a harmonic
series with a gliding pitch (90-260 Hz) shaped by three formants gliding between random
vowels, separated by pauses (offsets, so the reverberant tails show). Clip k of a video is
conditioned on clip k + 1 (cyclically).

``av-folder`` reads real clips: a CSV (``path``: the file, or a folder holding
``clips.csv``) with columns ``clip,video,audio,frame`` and optionally ``clean``; paths are
relative to the CSV's folder. ``audio`` is the clip as recorded (the target), ``frame`` an
image of its video (resized to ``image_size``, RGB), ``clean`` an enhanced version of it
(e.g. from a speech enhancer). Without ``clean`` the input is made by spectral gating
(power spectral subtraction of 10x each STFT bin's 20th percentile over the clip, so
stationary ambience is removed but reverberation is not): a weaker stand-in for the
paper's enhancement network.
Audio is read as ``audio-folder`` reads it (soundfile, mono), cropped or zero-padded to
``duration``; a file at another rate than ``sample_rate`` is refused unless ``resample =
true``. Each clip is conditioned on the next clip of its video (cyclically), so every video
needs two clips; ``scene`` is the video's index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Dataset, DataSpec, Options, Splits
from autoplat.plugins.datasets.audio import read_audio
from autoplat.plugins.datasets.image_folder import _read as read_image
from autoplat.plugins.datasets.splits import DataOptions

log = logging.getLogger(__name__)

TASK, MODALITY = "scene-transfer", "audio-image"
AMBIENCES = ("hum", "babble", "rain")
COLUMNS = ("clip", "video", "audio", "frame")
OVERSUBTRACT = 10.0  # times the 20th-percentile power (about 2x the mean of stationary noise)


@dataclass(frozen=True)
class Scene:
    """A scene archetype: its acoustics and its look."""

    name: str
    rt60: float  # seconds to decay by 60 dB
    ambience: str  # one of AMBIENCES
    snr_db: float  # speech RMS over the ambience's RMS
    colour: tuple[float, float, float]
    stripe_angle: float  # radians
    stripe_period: float  # pixels


SCENES = (
    Scene("booth", 0.06, "hum", 22.0, (0.55, 0.6, 0.75), 0.0, 8.0),
    Scene("kitchen", 0.3, "hum", 8.0, (0.9, 0.8, 0.3), 1.57, 3.0),
    Scene("cafe", 0.4, "babble", 6.0, (0.6, 0.35, 0.15), 0.79, 4.0),
    Scene("hall", 0.8, "babble", 14.0, (0.8, 0.15, 0.2), 0.0, 2.5),
    Scene("porch", 0.15, "rain", 4.0, (0.2, 0.65, 0.3), 2.36, 5.0),
    Scene("tunnel", 1.0, "rain", 12.0, (0.3, 0.15, 0.45), 1.57, 6.0),
)
"""The scene archetypes: short and long decays, each ambience at a low and a high SNR."""


# -- synthesis -------------------------------------------------------------------------------
def speech_like(samples: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic speech-like source (not a voice), float64 with peak 0.5: 2-4 syllables
    of a formant-shaped harmonic series with gliding pitch, separated by pauses."""
    out = np.zeros(samples)
    syllables = int(rng.integers(2, 5))
    slot = samples // syllables
    for k in range(syllables):
        length = int(slot * rng.uniform(0.45, 0.75))
        start = k * slot + int(rng.integers(0, slot - length + 1))
        t = np.arange(length) / rate
        f0 = rng.uniform(90, 260) * np.exp(rng.uniform(-0.25, 0.25) * t / t[-1])  # glide
        phase = 2 * np.pi * np.cumsum(f0) / rate
        formants = np.linspace(  # (3, length): F1-F3 glide between two random vowels
            [rng.uniform(300, 900), rng.uniform(900, 2300), rng.uniform(2400, 3400)],
            [rng.uniform(300, 900), rng.uniform(900, 2300), rng.uniform(2400, 3400)],
            length,
        ).T
        wave = np.zeros(length)
        for h in range(1, int(0.45 * rate / f0.max()) + 1):
            freq = h * f0
            gain = sum(
                np.exp(-0.5 * ((freq - f) / 120.0) ** 2) / (i + 1) for i, f in enumerate(formants)
            )
            wave += (gain + 0.02) * np.sin(h * phase) / np.sqrt(h)
        envelope = np.sin(np.pi * np.arange(length) / length) ** 0.5
        out[start : start + length] += wave * envelope
    return 0.5 * out / max(1e-9, np.abs(out).max())


def impulse_response(rt60: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A room impulse response: a direct impulse, then noise decaying 60 dB in ``rt60``."""
    length = max(2, int(1.2 * rt60 * rate))
    t = np.arange(length) / rate
    tail = rng.standard_normal(length) * np.exp(-6.908 * t / rt60)  # 10**-3 amplitude at rt60
    tail[0] = 0.0
    rir = tail / np.sqrt(np.sum(tail**2) + 1e-12)  # as much energy as the direct path
    rir[0] = 1.0
    return rir


def ambience(kind: str, samples: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """An ambient texture with unit RMS: mains ``hum``, far ``babble`` or ``rain``."""
    t = np.arange(samples) / rate
    if kind == "hum":
        mains = rng.choice([50.0, 60.0])
        wave = sum(
            np.sin(2 * np.pi * h * mains * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5)
        )
        wave = wave + 0.05 * rng.standard_normal(samples)
    elif kind == "babble":
        wave = sum(
            np.roll(speech_like(samples, rate, rng), int(rng.integers(samples))) for _ in range(5)
        )
    elif kind == "rain":
        spectrum = np.fft.rfft(rng.standard_normal(samples))
        freqs = np.fft.rfftfreq(samples, 1 / rate)
        wave = np.fft.irfft(spectrum * np.clip(freqs / 2000.0, 0, 1), samples)
        drops = rng.random(samples) < 60 / rate  # ~60 droplets a second
        wave += np.convolve(drops * rng.uniform(2, 6, samples), np.exp(-np.arange(24) / 4.0))[
            :samples
        ]
    else:
        raise ValueError(f"unknown ambience {kind!r}; known: {', '.join(AMBIENCES)}")
    return wave / max(1e-9, np.sqrt(np.mean(wave**2)))


def render(clean: np.ndarray, rir: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` through ``rir`` (kept at its RMS) plus ``noise`` (unit RMS) at ``snr_db``."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(clean, rir)[: len(clean)]
    rms = np.sqrt(np.mean(clean**2)) + 1e-9
    wet *= rms / (np.sqrt(np.mean(wet**2)) + 1e-9)
    return wet + noise * rms / 10 ** (snr_db / 20)


def frame(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """A frame (3, size, size) in [0, 1]: the scene's colour and stripes, varied per frame."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    along = x * np.cos(scene.stripe_angle) + y * np.sin(scene.stripe_angle)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * along / scene.stripe_period + rng.uniform(0, 6.3))
    image = np.asarray(scene.colour)[:, None, None] * (0.6 + 0.4 * stripes)[None]
    image *= rng.uniform(0.8, 1.2)  # lighting
    cx, cy, radius = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.1, 0.25) * size]
    blob = (x - cx) ** 2 + (y - cy) ** 2 < radius**2  # a person or an object passing by
    image[:, blob] = rng.uniform(0, 1, 3)[:, None]
    image += rng.normal(0, 0.04, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


# -- the synthetic dataset -------------------------------------------------------------------
class AVScenesOptions(Options):
    """How many videos per split, clips per video, and the audio and frame sizes."""

    n_train: int = Field(48, ge=1, le=100_000, description="training videos")
    n_val: int = Field(8, ge=1, le=100_000, description="validation videos")
    n_test: int = Field(8, ge=1, le=100_000, description="test videos")
    clips_per_video: int = Field(4, ge=2, le=64)
    scenes: int = Field(len(SCENES), ge=2, le=len(SCENES), description="the first k of SCENES")
    sample_rate: int = Field(8000, ge=4000, le=48_000, description="Hz")
    duration: float = Field(0.512, gt=0.05, le=10, description="seconds per clip")
    image_size: int = Field(16, ge=4, le=256, description="frames are image_size squared")


def pack(parts: list[tuple[np.ndarray, ...]], spec: DataSpec) -> Splits:
    """Train, val and test tuples of numpy arrays as a ``Splits`` of tensors."""
    train, val, test = (tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in p) for p in parts)
    return Splits(train, val, test, spec)


def partners(videos: np.ndarray) -> np.ndarray:
    """For each clip, the index of the next clip of its video (cyclically)."""
    out = np.empty(len(videos), dtype=np.int64)
    for video in np.unique(videos):
        idx = np.flatnonzero(videos == video)
        out[idx] = np.roll(idx, -1)
    return out


class AVScenes(Dataset):
    """Synthetic videos of speech-like sources in scenes; see the module docstring."""

    name: ClassVar[str] = "av-scenes"
    tasks: ClassVar[tuple[str, ...]] = (TASK,)
    modality: ClassVar[str] = MODALITY
    Options: ClassVar[type[AVScenesOptions]] = AVScenesOptions

    def load(self, options: AVScenesOptions, seed: int) -> Splits:
        """Generate the videos; the same seed and options give the same tensors."""
        rng = np.random.default_rng(seed)
        samples = round(options.sample_rate * options.duration)
        counts = (options.n_train, options.n_val, options.n_test)
        parts, first = [], 0
        for count in counts:
            parts.append(self.videos(range(first, first + count), options, samples, rng))
            first += count
        spec = DataSpec(
            TASK, MODALITY, (samples, 3, options.image_size, options.image_size),
            options.scenes, tuple(s.name for s in SCENES[: options.scenes]),
            sample_rate=options.sample_rate,
        )  # fmt: skip
        return pack(parts, spec)

    @staticmethod
    def videos(
        ids: range, options: AVScenesOptions, samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, ...]:
        """The clips of videos ``ids``: (clean, in_scene, cond_audio, cond_frame, scene, video)."""
        rate, k = options.sample_rate, options.clips_per_video
        clean, wet, frames, scenes, videos = [], [], [], [], []
        for video in ids:
            index = int(rng.integers(options.scenes))
            scene = SCENES[index]
            rt60 = scene.rt60 * rng.uniform(0.85, 1.15)
            snr = scene.snr_db + rng.uniform(-2, 2)
            rir = impulse_response(rt60, rate, rng)
            noise = ambience(scene.ambience, samples * k, rate, rng).reshape(k, samples)
            for clip in range(k):
                source = speech_like(samples, rate, rng)
                clean.append(source)
                wet.append(render(source, rir, noise[clip], snr))
                frames.append(frame(scene, options.image_size, rng))
                scenes.append(index)
                videos.append(video)
        video_ids = np.asarray(videos, dtype=np.int64)
        other = partners(video_ids)
        clean_a = np.clip(np.stack(clean), -1, 1).astype(np.float32)
        wet_a = np.clip(np.stack(wet), -1, 1).astype(np.float32)
        frames_a = np.stack(frames)
        return clean_a, wet_a, wet_a[other], frames_a[other], np.asarray(scenes), video_ids


# -- real clips ------------------------------------------------------------------------------
class AVFolderOptions(DataOptions):
    """Where the clips CSV is, how the audio and frames are read, and the split."""

    sample_rate: int = Field(8000, ge=4000, le=96_000, description="Hz the files must have")
    resample: bool = Field(False, description="resample files at another rate (else refused)")
    duration: float = Field(0.512, gt=0.05, le=60, description="seconds kept (cropped/padded)")
    image_size: int = Field(16, ge=4, le=256, description="frames are resized to this square")


def find_clips(path: Path) -> Path:
    """The clips CSV at ``path``: the file itself, or ``clips.csv`` in the folder."""
    if not path.exists():
        raise DataError(f"{path} does not exist; set [dataset] path to a clips CSV or its folder")
    if path.is_dir():
        table = path / "clips.csv"
        if not table.is_file():
            raise DataError(
                f"folder {path} holds no clips.csv; add one with columns "
                f"{','.join(COLUMNS)} (one row per clip) or point [dataset] path at your CSV"
            )
        return table
    return path


def read_clips(table: Path) -> list[tuple[int, dict[str, str]]]:
    """The (line, row) pairs of a clips CSV with a header line."""
    import csv

    try:
        text = table.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{table}: cannot read the clips CSV ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{table}:1: the header lacks column(s) {', '.join(missing)}; it has "
            f"{', '.join(columns) or 'none'} (need {','.join(COLUMNS)}, optionally clean)"
        )
    rows = []
    for record in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in record.items()}
        rows.append((reader.line_num, row))
    if not rows:
        raise DataError(f"{table}: the clips CSV has no rows; add one row per clip")
    return rows


def spectral_gate(wave: np.ndarray, n_fft: int = 256) -> np.ndarray:
    """``wave`` with ``OVERSUBTRACT`` times each STFT bin's 20th-percentile power subtracted
    (power spectral subtraction, phase kept: stationary noise goes, reverberation stays):
    the stand-in enhancement when a CSV has no ``clean`` column."""
    x = torch.from_numpy(wave.astype(np.float32))
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True)
    power = spec.abs().square()
    floor = torch.quantile(power, 0.2, dim=-1, keepdim=True)
    gated = spec * (1 - OVERSUBTRACT * floor / power.clamp(min=1e-12)).clamp(min=0).sqrt()
    out = torch.istft(gated, n_fft, n_fft // 4, window=window, length=len(wave))
    return out.numpy().astype(np.float32)


def _audio(file: Path, where: str, options: AVFolderOptions, samples: int) -> np.ndarray:
    """One audio file at the options' rate, or a DataError naming the row and the fix."""
    import soundfile

    if not file.is_file():
        raise DataError(f"{where}: audio file {file} does not exist; fix the path in the row")
    try:
        rate = soundfile.info(str(file)).samplerate
    except (soundfile.SoundFileError, RuntimeError, OSError) as exc:
        raise DataError(f"{where}: cannot read audio file {file} ({exc})") from None
    if rate != options.sample_rate and not options.resample:
        raise DataError(
            f"{where}: {file} is at {rate} Hz, but [dataset] sample_rate is "
            f"{options.sample_rate}; set sample_rate = {rate}, or resample = true"
        )
    try:
        return read_audio(file, options.sample_rate, samples)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def _frame(file: Path, where: str, size: int) -> np.ndarray:
    if not file.is_file():
        raise DataError(f"{where}: frame image {file} does not exist; fix the path in the row")
    try:
        return read_image(file, 3, size)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def _single_clip_videos(rows: list[tuple[int, dict[str, str]]], table: Path) -> None:
    lines: dict[str, list[int]] = {}
    for number, row in rows:
        lines.setdefault(row["video"], []).append(number)
    single = [f"{video} (line {found[0]})" for video, found in lines.items() if len(found) == 1]
    if single:
        raise DataError(
            f"{table}: video(s) {', '.join(single[:5])} have a single clip, but each clip is "
            "conditioned on another clip of its video; add a clip of each or drop the row(s)"
        )
    if len(lines) < 3:
        raise DataError(
            f"{table}: {len(lines)} video(s); the train/val/test split is by video and needs "
            "at least 3"
        )


def video_split(videos: np.ndarray, options: AVFolderOptions, seed: int) -> list[np.ndarray]:
    """Clip indices of the train, val and test videos (each at least one video)."""
    names = np.unique(videos)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(max(1, round(options.val_fraction * len(names))), len(names) - 2)
    n_test = min(max(1, round(options.test_fraction * len(names))), len(names) - 1 - n_val)
    groups = (order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test])
    return [np.flatnonzero(np.isin(videos, names[g])) for g in groups]


class AVFolder(Dataset):
    """Real audio-visual clips listed in a CSV; see the module docstring."""

    name: ClassVar[str] = "av-folder"
    tasks: ClassVar[tuple[str, ...]] = (TASK,)
    modality: ClassVar[str] = MODALITY
    Options: ClassVar[type[AVFolderOptions]] = AVFolderOptions

    def load(self, options: AVFolderOptions, seed: int) -> Splits:
        """Read the clips and split them by video; the same seed gives the same split.

        Raises:
            DataError: The CSV is missing or malformed, a file is missing, unreadable or
                at the wrong rate, a video has a single clip, or there are under 3 videos.
        """
        table = find_clips(options.path)
        rows = read_clips(table)
        for number, row in rows:
            empty = [c for c in COLUMNS if not row.get(c)]
            if empty:
                raise DataError(f"{table}:{number}: empty {', '.join(empty)}; fill in the row")
        _single_clip_videos(rows, table)
        samples = round(options.sample_rate * options.duration)
        clean, wet, frames, videos = [], [], [], []
        for number, row in rows:
            where = f"{table}:{number}"
            audio = _audio(_resolve(row["audio"], table), where, options, samples)
            wet.append(audio)
            if row.get("clean"):
                clean.append(_audio(_resolve(row["clean"], table), where, options, samples))
            else:
                clean.append(spectral_gate(audio))
            frames.append(_frame(_resolve(row["frame"], table), where, options.image_size))
            videos.append(row["video"])
        names = sorted(set(videos))
        video_ids = np.asarray([names.index(v) for v in videos], dtype=np.int64)
        other = partners(video_ids)
        arrays = (np.stack(clean), np.stack(wet), np.stack(wet)[other], np.stack(frames)[other])
        arrays = (*arrays, video_ids, video_ids)
        parts = [tuple(a[idx] for a in arrays) for idx in video_split(video_ids, options, seed)]
        spec = DataSpec(
            TASK, MODALITY, (samples, 3, options.image_size, options.image_size),
            len(names), tuple(names), sample_rate=options.sample_rate,
        )  # fmt: skip
        return pack(parts, spec)


def _resolve(written: str, table: Path) -> Path:
    file = Path(written).expanduser()
    return file if file.is_absolute() else table.parent / file
