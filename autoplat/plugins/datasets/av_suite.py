"""``av-suite``: synthetic audio-visual clips annotated for three probe tasks, the data of
the AV-SUPERB-style suite (``av-superb`` architecture; Tseng et al. 2024).

Each clip is a waveform (``duration`` s at ``sample_rate`` Hz, in [-1, 1]) and one frame
(3 x ``image_size`` squared, in [0, 1]) drawn from three latent factors:

- a **scene** of ``SCENES``. Seen: the frame's background tint (one colour per scene,
  brightness jittered), so vision names the scene. Heard: an ambient bed, a mains-like
  hum (harmonics of 80-120 Hz) indoors or rain-like hiss (differenced white noise)
  outdoors, so audio alone narrows four scenes to two.
- one or two **sound events** of ``SUITE_EVENTS`` at random onsets (the ``sound-events``
  synthesizer), all audible; only the first is **on screen**, as its object
  (``EVENT_SHAPES``) in a random colour, size and place. Audio hears every event, vision
  sees one of them.
- a **partner**: another clip of the same split whose on-screen object is *not* among
  this clip's events, the mismatched frame of the correspondence task.

The tasks, chosen so that audio-only, visual-only and fused representations rank
differently:

- ``scene`` (4 classes, accuracy): vision names the scene; audio leaves two open.
- ``event`` (multi-label over 4 events, mAP): audio hears all events; vision sees one.
- ``corr`` (audio-visual correspondence, accuracy): each clip's audio with its own frame
  (match) and with its partner's frame (mismatch). Each audio and, in expectation, each
  frame occurs in both classes, so one modality alone is at chance (0.5); the pair is
  decided by whether the on-screen object is among the heard events.

Splits (``train``, ``val``, ``test``) are ``(waveforms, images, labels)`` with
``labels`` int64 (N, 3 + len(SUITE_EVENTS)): column ``SCENE`` the scene, ``PARTNER`` the
partner's row in the same split, ``SHOWN`` the on-screen event, then from ``EVENTS`` the
heard events' multi-hot. ``train`` is the
(self-supervised) pretraining split, whose labels only the probes read; the probes are
fit on it and scored on ``val`` (probe dev) and ``test`` (probe test). Each split is
drawn from its own seeded generator, so the same seed and options give the same tensors.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from autoplat.core.interfaces import Dataset, DataSpec, Options, Splits
from autoplat.plugins.datasets.audio import synthesize
from autoplat.plugins.datasets.shapes import COLORS, shape_mask

TASK = "av_suite"
SCENES = ("kitchen", "hall", "street", "park")
INDOOR = (True, True, False, False)  # hum indoors, hiss outdoors
SCENE_TINTS = ((0.40, 0.32, 0.08), (0.25, 0.25, 0.25), (0.08, 0.16, 0.40), (0.08, 0.36, 0.12))
SUITE_EVENTS = ("tone", "chirp_up", "chirp_down", "noise_burst")
EVENT_SHAPES = ("circle", "square", "triangle", "cross")  # what each event looks like
SCENE, PARTNER, SHOWN, EVENTS = 0, 1, 2, 3  # label columns; the multi-hot starts at EVENTS
PART_NAMES = ("train", "val", "test")


class AVSuiteOptions(Options):
    """Split sizes, how the clips sound and how the frames look."""

    n_train: int = Field(600, ge=2, le=1_000_000, description="pretraining (and probe fit) clips")
    n_val: int = Field(200, ge=2, le=1_000_000, description="probe dev clips")
    n_test: int = Field(200, ge=2, le=1_000_000, description="probe test clips")
    sample_rate: int = Field(8000, ge=1000, le=96_000, description="Hz")
    duration: float = Field(0.5, gt=0.01, le=10, description="seconds per clip")
    snr_db: float = Field(15.0, ge=-20, le=60, description="events' RMS over white noise")
    ambient: float = Field(0.08, ge=0, le=0.5, description="peak level of the scene's ambience")
    image_size: int = Field(16, ge=8, le=256, description="frames are image_size squared")
    image_noise: float = Field(0.05, ge=0, le=0.5, description="std of Gaussian pixel noise")


def ambience(indoor: bool, samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A scene's ambient bed, peak 1: hum (harmonics of 80-120 Hz) or hiss."""
    if indoor:
        t = np.arange(samples) / sample_rate
        f0 = rng.uniform(80, 120)
        wave = sum(
            np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3)
        )
    else:
        wave = np.diff(rng.standard_normal(samples + 1))  # white noise tilted to the highs
    return wave / max(1e-9, np.abs(wave).max())


def clip_audio(
    scene: int, events: list[int], options: AVSuiteOptions, rng: np.random.Generator
) -> np.ndarray:
    """One clip: its events at random levels, the scene's ambience, white noise."""
    samples = round(options.sample_rate * options.duration)
    rate = options.sample_rate
    sound = sum(
        synthesize(SUITE_EVENTS[e], samples, rate, rng) * rng.uniform(0.3, 0.6) for e in events
    )
    rms = np.sqrt(np.mean(sound[sound != 0] ** 2))
    bed = ambience(INDOOR[scene], samples, rate, rng) * options.ambient * rng.uniform(0.7, 1.0)
    noise = rng.normal(0.0, rms / 10 ** (options.snr_db / 20), samples)
    return np.clip(sound + bed + noise, -1.0, 1.0)


def clip_frame(
    scene: int, shown: int, options: AVSuiteOptions, rng: np.random.Generator
) -> np.ndarray:
    """One frame: the scene's tint, the on-screen event's object, pixel noise."""
    size = options.image_size
    tint = np.asarray(SCENE_TINTS[scene], dtype=np.float32) * rng.uniform(0.8, 1.2)
    frame = np.broadcast_to(tint[:, None, None], (3, size, size)).copy()
    palette = np.asarray(list(COLORS.values()), dtype=np.float32)
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    mask = shape_mask(EVENT_SHAPES[shown], size, cx, cy, rng.uniform(0.2, 0.3) * size)
    frame[:, mask] = palette[rng.integers(len(palette))][:, None]
    frame += rng.normal(0.0, options.image_noise, size=frame.shape)
    return np.clip(frame, 0.0, 1.0)


def partners(events: list[list[int]], rng: np.random.Generator) -> np.ndarray:
    """For each clip, another clip whose on-screen event (its first) it does not hear."""
    n = len(events)
    shown = np.asarray([e[0] for e in events])
    out = np.empty(n, dtype=np.int64)
    for i, heard in enumerate(events):
        eligible = np.flatnonzero(~np.isin(shown, heard))
        out[i] = rng.choice(eligible) if len(eligible) else (i + 1) % n
    return out


def generate(n: int, options: AVSuiteOptions, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """``n`` clips as (waveforms, images, labels); see the module docstring."""
    scenes = rng.integers(len(SCENES), size=n)
    events = [
        [int(e) for e in rng.choice(len(SUITE_EVENTS), int(rng.integers(1, 3)), replace=False)]
        for _ in range(n)
    ]
    audio = np.stack([clip_audio(s, e, options, rng) for s, e in zip(scenes, events, strict=True)])
    frames = np.stack(
        [clip_frame(s, e[0], options, rng) for s, e in zip(scenes, events, strict=True)]
    )
    labels = np.zeros((n, EVENTS + len(SUITE_EVENTS)), dtype=np.int64)
    labels[:, SCENE] = scenes
    labels[:, PARTNER] = partners(events, rng)
    labels[:, SHOWN] = [e[0] for e in events]
    for i, heard in enumerate(events):
        labels[i, [EVENTS + e for e in heard]] = 1
    return (
        torch.from_numpy(audio.astype(np.float32)),
        torch.from_numpy(frames.astype(np.float32)),
        torch.from_numpy(labels),
    )


def correspondence(split: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The ``corr`` task of a split: (waveforms, images, match) with each clip's audio
    once with its own frame (match 1) and once with its partner's (match 0)."""
    audio, images, labels = split[:3]
    partner = labels[:, PARTNER]
    match = torch.cat([torch.ones(len(audio)), torch.zeros(len(audio))]).long()
    return torch.cat([audio, audio]), torch.cat([images, images[partner]]), match


class AVSuite(Dataset):
    """Synthetic audio-visual clips for the scene, event and correspondence probe tasks;
    see the module docstring."""

    name: ClassVar[str] = "av-suite"
    tasks: ClassVar[tuple[str, ...]] = (TASK,)
    modality: ClassVar[str] = "audio-image"
    Options: ClassVar[type[AVSuiteOptions]] = AVSuiteOptions

    def load(self, options: AVSuiteOptions, seed: int) -> Splits:
        """Generate the splits; the same seed and options give the same tensors."""
        sizes = (options.n_train, options.n_val, options.n_test)
        parts = [
            generate(n, options, np.random.default_rng([seed, k])) for k, n in enumerate(sizes)
        ]
        samples = round(options.sample_rate * options.duration)
        spec = DataSpec(
            TASK,
            "audio-image",
            (samples, 3, options.image_size, options.image_size),
            label_names=SCENES,
            sample_rate=options.sample_rate,
        )
        return Splits(train=parts[0], val=parts[1], test=parts[2], spec=spec)
