"""Sound-event classifiers on raw waveforms: a log-mel front end, then an audio
spectrogram transformer (``encoder = "ast"``) or a small CNN (``encoder = "cnn"``).

Inputs are waveforms (batch, samples) in [-1, 1] (``DataSpec.input_shape`` is
``(samples,)``). ``LogMel`` (``autoplat.plugins.audio.frontend``) turns them into
log-mel power (batch, n_mels, frames), a batch norm per mel bin standardises it (as
PANNs do), and then:

- ``ast`` (Gong et al. 2021, small, from scratch): the spectrogram is cut into
  ``patch_size`` squared time-frequency patches ``patch_size - patch_overlap`` apart
  (AST overlaps them; the frames are padded so the patches tile them), embedded
  linearly, given learned positions (and a cls token) and run through ``depth`` pre-norm
  transformer blocks (the ViT's ``Block``); the feature is the cls token's output
  (``pooling = "cls"``) or the mean of the patch tokens (``"mean"``). SpecAugment's
  masking (``freq_mask`` mel bins, ``time_mask`` frames; one band each per clip) applies
  in training. At these sizes the AST needs about 4x the CNN's epochs, at about the
  CNN's CPU time (benchmarks/ast_vs_cnn.py, docs/fidelity.md).
- ``cnn``: ``depth`` stages of two 3x3 conv-BN-ReLU layers (``width`` channels, doubled
  each stage) with 2x2 max pooling between stages; global average pooling is the feature.

``model.head`` is the final ``Linear`` from the feature to the logits. The mel scale
assumes ``sample_rate`` (a model param, default 8000 as the synthetic datasets): it must
be the dataset's rate (``DataSpec.sample_rate``; a search refuses a space where it is
not). Training is the standard classification trainer; with ``robust_epsilons`` set,
each evaluation also measures PGD robustness on the waveforms
(``autoplat.plugins.robustness``): ``val_robust_accuracy`` (at the largest epsilon) at
epoch 1, every ``eval_every`` epochs and the last (carried over between), and at the end
the test curve ``test_robust_acc_eps_<i>`` (with ``test_robust_eps_<i>``, the epsilon)
and ``test_robust_accuracy``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import (
    ALLOCATION,
    EPOCHS,
    LAYERS,
    PATCH,
    Architecture,
    DataSpec,
    OnnxPart,
    Range,
    Splits,
    ints,
)
from autoplat.core.training import TRAINER_PARAMS, TrialFailed, train_classification
from autoplat.plugins.audio.frontend import LogMel
from autoplat.plugins.layers import BLOCK_RANGES, Block, PatchTokens, heads_problem
from autoplat.plugins.robustness import ROBUST_PARAMS, check_robust_params, robust_metrics

ENCODERS = ("ast", "cnn")
POOLINGS = ("cls", "mean")


class Spectrogram(nn.Module):
    """Waveforms -> standardised log-mel (batch, 1, n_mels, frames), the frames padded so
    that ``patch``-wide windows ``stride`` (default ``patch``) apart tile them.

    In training mode, SpecAugment's masking (Park et al. 2019): per example, one band of
    0..``freq_mask`` mel bins and one of 0..``time_mask`` frames, at uniform positions, are
    set to 0 (the mean after the batch norm). Evaluation and export never mask.
    """

    def __init__(
        self,
        samples: int,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        patch: int = 1,
        stride: int | None = None,
        freq_mask: int = 0,
        time_mask: int = 0,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.logmel = LogMel(sample_rate, n_fft, hop_length, n_mels)
        self.norm = nn.BatchNorm1d(n_mels)
        frames = self.logmel.frames(samples)
        stride = stride or patch  # default: patches side by side
        self.pad = patch - frames if frames < patch else -(frames - patch) % stride
        self.shape = (n_mels, frames + self.pad)
        self.masks = (freq_mask, time_mask)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.logmel(waveforms))
        if self.training:
            x = mask_bands(mask_bands(x, self.masks[0], 1), self.masks[1], 2)
        return F.pad(x, (0, self.pad)).unsqueeze(1)


def mask_bands(x: torch.Tensor, max_width: int, dim: int) -> torch.Tensor:
    """``x`` (batch, mel, frames) with one band per example along ``dim`` (1: mel bins,
    2: frames) set to 0; widths uniform in 0..``max_width``, starts uniform where the band
    fits (torch's global generator)."""
    if max_width <= 0:
        return x
    batch, size = x.shape[0], x.shape[dim]
    width = torch.randint(0, min(max_width, size) + 1, (batch, 1), device=x.device)
    start = (torch.rand(batch, 1, device=x.device) * (size - width + 1)).floor()
    position = torch.arange(size, device=x.device)
    band = (position >= start) & (position < start + width)  # (batch, size)
    return x.masked_fill(band[:, :, None] if dim == 1 else band[:, None, :], 0.0)


class AST(nn.Module):
    """Patch tokens (``stride`` apart: overlapping when below ``patch_size``) with learned
    positions, transformer blocks and a final norm; the feature (batch, width) is a cls
    token's output (``pooling = "cls"``) or the mean of the patch tokens (``"mean"``)."""

    def __init__(
        self,
        shape: tuple[int, int],
        patch_size: int,
        stride: int,
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: int,
        dropout: float,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        self.patches = PatchTokens(1, *shape, patch_size, width, stride=stride)
        self.pooling = pooling
        if pooling == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width)
        self.features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x)
        if self.pooling == "cls":
            tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        out = self.norm(self.blocks(self.drop(tokens)))
        return out[:, 0] if self.pooling == "cls" else out.mean(dim=1)


class AudioCNN(nn.Module):
    """Conv stages with pooling, then global average pooling (batch, channels)."""

    def __init__(self, depth: int, width: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for stage in range(depth):
            out = width * 2**stage
            for c_in in (channels, out):
                layers += [nn.Conv2d(c_in, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if stage < depth - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            channels = out
        self.layers = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.layers(x).mean(dim=(2, 3)))


class AudioClassifier(nn.Module):
    """Waveforms -> log-mel -> encoder -> ``head`` (a Linear) -> logits."""

    def __init__(self, spectrogram: Spectrogram, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.spectrogram = spectrogram
        self.encoder = encoder
        self.head = nn.Linear(encoder.features, num_classes)

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.spectrogram(waveforms))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(waveforms))


FRONTEND_RANGES: dict[str, Range] = {
    "sample_rate": ints(1, 384_000),
    "n_fft": ints(16, 65_536, ALLOCATION),
    "hop_length": ints(1, 65_536),
    "n_mels": ints(1, 1024, ALLOCATION),
}
"""The log-mel front end's params (``frontend_problem`` checks how they fit together)."""

ROBUST_TRAINER_RANGES: dict[str, Range] = {
    "robust_steps": ints(1, 10_000, "each step is another forward and backward pass"),
    "robust_samples": ints(1, 1_000_000, ALLOCATION),
    "eval_every": EPOCHS,
}
"""The trainer params of ``ROBUST_PARAMS`` and ``eval_every`` (audio and audio-visual)."""


def frontend_problem(p: dict[str, Any], name: str, spec: DataSpec | None = None) -> str | None:
    """Why the log-mel params ``p`` (each in ``FRONTEND_RANGES``) cannot work together (on
    ``spec``'s audio, when given), or None."""
    if spec is not None and spec.sample_rate and p["sample_rate"] != spec.sample_rate:
        return (
            f"{name}: sample_rate {p['sample_rate']} is not the data's {spec.sample_rate} Hz "
            f"(the mel scale would be wrong); set sample_rate = {spec.sample_rate} in [space]"
        )
    if p["n_mels"] > p["n_fft"] // 2 + 1:
        return f"{name}: n_mels {p['n_mels']} exceeds the {p['n_fft'] // 2 + 1} FFT bins of n_fft"
    return None


def eval_epochs(epoch: int, epochs: int, every: int) -> bool:
    """Whether the costly evaluations run at ``epoch``: the first, every ``every``, the last."""
    return epoch == 1 or epoch % every == 0 or epoch == epochs


class Audio(Architecture):
    """Log-mel + AST or CNN sound classifier; see the module docstring."""

    name: ClassVar[str] = "audio"
    task: ClassVar[str] = "classification"
    modalities: ClassVar[tuple[str, ...]] = ("audio",)
    default_space: ClassVar[str] = "audio"
    defaults: ClassVar[dict[str, Any]] = {
        "encoder": "cnn",
        "sample_rate": 8000,
        "n_fft": 256,
        "hop_length": 64,
        "n_mels": 32,
        "depth": 2,
        "width": 32,
        "heads": 2,
        "mlp_ratio": 2,
        "patch_size": 8,
        "patch_overlap": 0,
        "pooling": "cls",
        "freq_mask": 0,
        "time_mask": 0,
        "dropout": 0.0,
    }
    trainer_params: ClassVar[dict[str, Any]] = {**ROBUST_PARAMS, "eval_every": 1}
    metrics: ClassVar[dict[str, str]] = {"val_robust_accuracy": "maximize"}
    metric_params: ClassVar[dict[str, str]] = {"val_robust_accuracy": "robust_epsilons"}
    param_ranges: ClassVar[dict[str, Range]] = {
        **FRONTEND_RANGES,
        **ROBUST_TRAINER_RANGES,
        **BLOCK_RANGES,
        "depth": LAYERS,
        "patch_size": PATCH,
        "patch_overlap": ints(0, 1023),
        "freq_mask": ints(0, 1024),
        "time_mask": ints(0, 100_000),
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build the model (for ``spec``'s audio, when given), or None."""
        if (reason := self.unknown_params(params)) is not None:
            return reason
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if p["encoder"] not in ENCODERS:
            return f"audio: encoder must be 'ast' or 'cnn', got {p['encoder']!r}"
        problem = frontend_problem(p, "audio", spec)
        if problem:
            return problem
        if p["encoder"] == "ast":
            if (reason := heads_problem("audio", p["width"], p["heads"])) is not None:
                return reason
            if p["pooling"] not in POOLINGS:
                return f"audio: pooling must be 'cls' or 'mean', got {p['pooling']!r}"
            patch, overlap = p["patch_size"], p["patch_overlap"]
            if overlap >= patch:
                return f"audio: patch_overlap {overlap} must be below patch_size {patch}"
            if p["n_mels"] < patch or (p["n_mels"] - patch) % (patch - overlap):
                return (
                    f"audio: patches of {patch} mel bins, {patch - overlap} apart "
                    f"(patch_size - patch_overlap), do not tile n_mels {p['n_mels']}; pick "
                    "n_mels - patch_size divisible by that"
                )
        if spec is not None and (len(spec.input_shape) != 1 or spec.input_shape[0] < p["n_fft"]):
            return (
                f"audio: needs waveforms shaped (samples,) with at least n_fft = {p['n_fft']} "
                f"samples, got input shape {spec.input_shape}"
            )
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> AudioClassifier:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        ast = p["encoder"] == "ast"
        patch = int(p["patch_size"]) if ast else 1
        stride = patch - int(p["patch_overlap"]) if ast else 1
        spectrogram = Spectrogram(
            spec.input_shape[0],
            int(p["sample_rate"]),
            int(p["n_fft"]),
            int(p["hop_length"]),
            int(p["n_mels"]),
            patch,
            stride,
            int(p["freq_mask"]),
            int(p["time_mask"]),
        )
        encoder: nn.Module
        if ast:
            encoder = AST(
                spectrogram.shape,
                patch,
                stride,
                int(p["depth"]),
                int(p["width"]),
                int(p["heads"]),
                int(p["mlp_ratio"]),
                float(p["dropout"]),
                str(p["pooling"]),
            )
        else:
            encoder = AudioCNN(int(p["depth"]), int(p["width"]), float(p["dropout"]))
        return AudioClassifier(spectrogram, encoder, spec.num_classes)

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """The whole model on waveforms at its ``sample_rate`` (stored with the export)."""
        rate = model.spectrogram.sample_rate  # type: ignore[union-attr]
        part = OnnxPart(
            model, (splits.test[0],), ("audio",), "audio", "logits", {"sample_rate": rate}
        )
        return {"model": part}

    def train(
        self,
        model: torch.nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Callable[[int, dict[str, float]], None],
        seed: int,
    ) -> dict[str, float]:
        """``train_classification``, plus the PGD metrics when ``robust_epsilons`` is set."""
        hp = {**TRAINER_PARAMS, **self.trainer_params, **params}
        try:
            epsilons = check_robust_params(hp, ("audio",))
        except ValueError as exc:
            raise TrialFailed(f"audio: {exc}") from None
        if not epsilons:
            return train_classification(model, splits, params, report, seed)
        epochs, every = int(hp["epochs"]), max(1, int(hp["eval_every"]))
        measured: dict[str, float] = {}

        def with_robustness(epoch: int, metrics: dict[str, float]) -> None:
            if eval_epochs(epoch, epochs, every):
                measured.update(
                    robust_metrics(
                        model,
                        splits.val[:1],
                        splits.val[1],
                        epsilons,
                        hp,
                        ("audio",),
                        "val",
                        sweep=False,
                        seed=seed,
                    )
                )
            metrics.update(measured)  # in place: train_classification returns this dict
            if epoch == epochs:
                metrics.update(
                    robust_metrics(
                        model,
                        splits.test[:1],
                        splits.test[1],
                        epsilons,
                        hp,
                        ("audio",),
                        "test",
                        sweep=True,
                        seed=seed,
                    )
                )
            report(epoch, metrics)

        return train_classification(model, splits, params, with_robustness, seed)
