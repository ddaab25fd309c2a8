"""Audio-visual classification with early, mid or late fusion, AV-SUPERB-style frozen
probes, and PGD robustness per modality.

Data: ``(waveforms, images, labels)`` splits whose ``DataSpec.input_shape`` is the audio
shape followed by the image shape, ``(samples, C, H, W)`` (see the
``audio-visual-events`` dataset). Waveforms are in [-1, 1], pixels in [0, 1].

Model (transformer towers, as in MBT, Nagrani et al. 2021). The audio becomes log-mel
patch tokens (``LogMel``, a batch norm per mel bin, ``audio_patch`` squared patches), the
image becomes ``image_patch`` squared patch tokens; each token sequence gets learned
positions and its own modality embedding. Both streams have ``depth`` pre-norm blocks in
total; ``fusion`` says where the streams start to attend to each other:

- ``early``: the two token sequences are concatenated before the first block; all
  ``depth`` blocks are shared and every layer mixes audio and image tokens.
- ``mid``: each modality has its own first ``depth // 2`` blocks; the token sequences are
  then concatenated and the remaining ``depth - depth // 2`` shared blocks mix them
  (``depth >= 2``).
- ``late``: each modality has its own ``depth`` blocks and the tokens never meet; only the
  head combines the two. The head is linear on the concatenated pooled features, so its
  logits are the sum of one linear classifier per modality: decision-level fusion.

The representation is always ``[mean of the audio tokens, mean of the image tokens]``
after a final LayerNorm, and ``head`` is the ``Linear`` from it to the logits. Given only
one modality (``embed(audio=...)`` or ``embed(image=...)``) the same blocks run on that
modality's tokens alone (a transformer takes any number of tokens): that is the model's
unimodal representation, under every fusion.

Trainer: AdamW with warmup and cosine decay on the fused logits (cross-entropy), as the
standard classification trainer. Each epoch reports ``train_loss``, ``val_accuracy``
and ``val_loss``; the last adds ``test_accuracy`` and ``test_loss``. AV-SUPERB's
protocol (Tseng et al. 2024): the trained encoders are frozen and light linear heads
(multinomial logistic regression on standardised features) are fit on the train
split's audio-only, image-only and fused representations; their accuracies are
``{val,test}_{audio,image,fused}_probe_accuracy``. With ``robust_epsilons`` set, PGD on
``robust_modality`` ("audio", "image" or "both"; ``autoplat.plugins.robustness``) gives
``val_robust_accuracy`` at the largest epsilon and, at the end, the test curve
``test_robust_acc_eps_<i>`` / ``test_robust_eps_<i>`` and ``test_robust_accuracy``. The
probes and the val attack run at epoch 1, every ``eval_every`` epochs and the last
(their values are carried over in between, so every report has them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import (
    LAYERS,
    PATCH,
    Architecture,
    DataSpec,
    OnnxPart,
    Range,
    Splits,
    one_of,
)
from autoplat.core.training import (
    EVAL_BATCH_SIZE,
    TRAINER_PARAMS,
    TrialFailed,
    autocast,
    start_training,
    train_epoch,
    warmup_cosine,
)
from autoplat.plugins.architectures.audio import (
    FRONTEND_RANGES,
    ROBUST_TRAINER_RANGES,
    Spectrogram,
    eval_epochs,
    frontend_problem,
)
from autoplat.plugins.architectures.dino import linear_probe
from autoplat.plugins.layers import BLOCK_RANGES, Block, heads_problem
from autoplat.plugins.robustness import ROBUST_PARAMS, check_robust_params, robust_metrics

FUSIONS = ("early", "mid", "late")
MODALITIES = ("audio", "image")


def fusion_layer(fusion: str, depth: int) -> int:
    """How many blocks each modality runs alone before the streams join."""
    return {"early": 0, "mid": depth // 2, "late": depth}[fusion]


class Tokens(nn.Module):
    """Inputs -> patch tokens + positions + a modality embedding (batch, N, width)."""

    def __init__(
        self, front: nn.Module | None, shape: tuple[int, int, int], patch: int, width: int
    ):
        super().__init__()
        self.front = front if front is not None else nn.Identity()
        channels, rows, cols = shape
        self.embed = nn.Conv2d(channels, width, kernel_size=patch, stride=patch)
        count = (rows // patch) * (cols // patch)
        self.pos = nn.Parameter(torch.randn(1, count, width) * width**-0.5)
        self.modality = nn.Parameter(torch.zeros(1, 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.front(x)).flatten(2).transpose(1, 2) + self.pos + self.modality


class AudioVisualModel(nn.Module):
    """Audio and image token streams fused early, mid or late; see the module docstring."""

    def __init__(
        self,
        samples: int,
        image_shape: tuple[int, int, int],
        num_classes: int,
        fusion: str,
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: int,
        audio_patch: int,
        image_patch: int,
        dropout: float,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
    ) -> None:
        super().__init__()
        spectrogram = Spectrogram(samples, sample_rate, n_fft, hop_length, n_mels, audio_patch)
        self.audio_tokens = Tokens(spectrogram, (1, *spectrogram.shape), audio_patch, width)
        self.image_tokens = Tokens(None, image_shape, image_patch, width)
        alone = fusion_layer(fusion, depth)

        def blocks(n: int) -> nn.Sequential:
            return nn.Sequential(*(Block(width, heads, mlp_ratio, dropout) for _ in range(n)))

        self.fusion = fusion
        self.audio_blocks, self.image_blocks = blocks(alone), blocks(alone)
        self.joint_blocks = blocks(depth - alone)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * width, num_classes)

    def embed(
        self, audio: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The pooled representation of the modalities given (batch, width per modality)."""
        streams = []
        if audio is not None:
            streams.append(self.audio_blocks(self.drop(self.audio_tokens(audio))))
        if image is not None:
            streams.append(self.image_blocks(self.drop(self.image_tokens(image))))
        if not streams:
            raise ValueError("embed needs audio, image or both")
        sizes = [s.shape[1] for s in streams]
        joint = self.norm(self.joint_blocks(torch.cat(streams, dim=1)))
        return torch.cat([part.mean(dim=1) for part in joint.split(sizes, dim=1)], dim=1)

    def forward(self, audio: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(audio, image))


# -- evaluation and training --------------------------------------------------------------------
@torch.inference_mode()
def evaluate_av(
    model: AudioVisualModel, split: tuple[torch.Tensor, ...], device: torch.device
) -> tuple[float, float]:
    """Fused accuracy and mean cross-entropy on ``(audio, images, labels)``."""
    model.eval()
    audio, images, labels = split
    correct, loss_sum = 0, 0.0
    for start in range(0, len(labels), EVAL_BATCH_SIZE):
        a, i, y = (t[start : start + EVAL_BATCH_SIZE].to(device) for t in (audio, images, labels))
        with autocast(device):
            logits = model(a, i).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    n = max(1, len(labels))
    return correct / n, loss_sum / n


@torch.inference_mode()
def features(
    model: AudioVisualModel, split: tuple[torch.Tensor, ...], use: str, device: torch.device
) -> torch.Tensor:
    """Frozen representations (float32, CPU) of a split: ``use`` is audio, image or fused."""
    model.eval()
    audio, images = split[0], split[1]
    parts = []
    for start in range(0, len(audio), EVAL_BATCH_SIZE):
        a = audio[start : start + EVAL_BATCH_SIZE].to(device) if use != "image" else None
        i = images[start : start + EVAL_BATCH_SIZE].to(device) if use != "audio" else None
        with autocast(device):
            parts.append(model.embed(a, i).float().cpu())
    return torch.cat(parts)


def probe_metrics(
    model: AudioVisualModel, splits: Splits, device: torch.device, test: bool
) -> dict[str, float]:
    """AV-SUPERB-style linear probes on frozen audio, image and fused representations."""
    out: dict[str, float] = {}
    parts = [("val", splits.val)] + ([("test", splits.test)] if test else [])
    for use in ("audio", "image", "fused"):
        train = features(model, splits.train, use, device)
        evals = [(features(model, split, use, device), split[2].cpu()) for _, split in parts]
        for (name, _), accuracy in zip(
            parts, linear_probe(train, splits.train[2].cpu(), evals), strict=True
        ):
            out[f"{name}_{use}_probe_accuracy"] = accuracy
    return out


def train_audio_visual(
    model: AudioVisualModel,
    splits: Splits,
    params: dict[str, Any],
    report: Callable[[int, dict[str, float]], None],
    seed: int,
) -> dict[str, float]:
    """Train on fused logits with AdamW and a cosine schedule; see the module docstring.

    Raises:
        TrialFailed: The loss became NaN or infinite, or a trainer param is invalid.
    """
    hp = {**TRAINER_PARAMS, **AudioVisual.trainer_params, **params}
    try:
        epsilons = check_robust_params(hp, MODALITIES)
    except ValueError as exc:
        raise TrialFailed(f"audio-visual: {exc}") from None
    every = max(1, int(hp["eval_every"]))
    epochs, batch_size, generator, device = start_training(model, hp, seed)
    audio, images, labels = (t.to(device) for t in splits.train)
    n_train = len(labels)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"])
    )
    scheduler = warmup_cosine(optimizer, hp, math.ceil(n_train / batch_size))

    measured: dict[str, float] = {}
    metrics: dict[str, float] = {}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(audio[idx], images[idx]).float(), labels[idx])

    for epoch in range(1, epochs + 1):
        train_loss = train_epoch(
            model, optimizer, scheduler, n_train, batch_size, generator, batch_loss,
            epoch,
        )  # fmt: skip
        last = epoch == epochs
        val_accuracy, val_loss = evaluate_av(model, splits.val, device)
        metrics = {"train_loss": train_loss, "val_accuracy": val_accuracy, "val_loss": val_loss}
        if eval_epochs(epoch, epochs, every):
            measured = probe_metrics(model, splits, device, test=last)
            if epsilons:
                measured |= robust_metrics(
                    model,
                    splits.val[:2],
                    splits.val[2],
                    epsilons,
                    hp,
                    MODALITIES,
                    "val",
                    sweep=False,
                    seed=seed,
                )
        metrics |= measured
        if last:
            test_accuracy, test_loss = evaluate_av(model, splits.test, device)
            metrics |= {"test_accuracy": test_accuracy, "test_loss": test_loss}
            if epsilons:
                metrics |= robust_metrics(
                    model,
                    splits.test[:2],
                    splits.test[2],
                    epsilons,
                    hp,
                    MODALITIES,
                    "test",
                    sweep=True,
                    seed=seed,
                )
        report(epoch, metrics)
    return metrics


# -- the architecture ---------------------------------------------------------------------------
def encoder_problem(name: str, p: dict[str, Any], spec: DataSpec | None) -> str | None:
    """Why the encoder params ``p`` (all given) cannot build an ``AudioVisualModel``, or
    None; messages start with the architecture's ``name``."""
    if (reason := frontend_problem(p, name, spec)) is not None:
        return reason
    if p["fusion"] == "mid" and p["depth"] < 2:
        return f"{name}: mid fusion needs depth >= 2 (one block alone, one shared)"
    if (reason := heads_problem(name, p["width"], p["heads"])) is not None:
        return reason
    if p["n_mels"] % p["audio_patch"]:
        return f"{name}: audio_patch {p['audio_patch']} does not divide n_mels {p['n_mels']}"
    return None


def clip_and_frame_problem(
    name: str, p: dict[str, Any], input_shape: tuple[int, ...]
) -> str | None:
    """Why clips and frames of ``input_shape`` (samples, C, H, W) do not fit ``p``, or None."""
    samples, _, rows, cols = input_shape
    if samples < p["n_fft"]:
        return f"{name}: clips of {samples} samples are shorter than n_fft {p['n_fft']}"
    if rows % p["image_patch"] or cols % p["image_patch"]:
        return (
            f"{name}: image_patch {p['image_patch']} does not divide the frame size {rows}x{cols}"
        )
    return None


class AudioVisual(Architecture):
    """Audio + image towers with early/mid/late fusion; see the module docstring."""

    name: ClassVar[str] = "audio-visual"
    task: ClassVar[str] = "classification"
    modalities: ClassVar[tuple[str, ...]] = ("audio-image",)
    default_space: ClassVar[str] = "audio-visual"
    defaults: ClassVar[dict[str, Any]] = {
        "fusion": "mid",
        "depth": 2,
        "width": 32,
        "heads": 2,
        "mlp_ratio": 2,
        "audio_patch": 8,
        "image_patch": 4,
        "dropout": 0.0,
        "sample_rate": 8000,
        "n_fft": 256,
        "hop_length": 64,
        "n_mels": 32,
    }
    trainer_params: ClassVar[dict[str, Any]] = {
        **ROBUST_PARAMS,
        "robust_modality": "both",  # or "audio", "image"
        "eval_every": 1,
    }
    metrics: ClassVar[dict[str, str]] = {
        "val_audio_probe_accuracy": "maximize",
        "val_image_probe_accuracy": "maximize",
        "val_fused_probe_accuracy": "maximize",
        "val_robust_accuracy": "maximize",
    }
    metric_params: ClassVar[dict[str, str]] = {"val_robust_accuracy": "robust_epsilons"}
    param_ranges: ClassVar[dict[str, Range]] = {
        **FRONTEND_RANGES,
        **ROBUST_TRAINER_RANGES,
        **BLOCK_RANGES,
        "depth": LAYERS,
        "audio_patch": PATCH,
        "image_patch": PATCH,
        "fusion": one_of(*FUSIONS),
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build the model (for ``spec``'s data, when given), or None."""
        if (reason := self.unknown_params(params)) is not None:
            return reason
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if (reason := encoder_problem("audio-visual", p, spec)) is not None:
            return reason
        if spec is not None:
            if spec.modality != "audio-image" or len(spec.input_shape) != 4:
                return (
                    "audio-visual: needs audio-image data with input shape (samples, C, H, W), "
                    f"got {spec.modality} data shaped {spec.input_shape}; for "
                    'audio-visual-events keep modality = "audio-image"'
                )
            return clip_and_frame_problem("audio-visual", p, spec.input_shape)
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> AudioVisualModel:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        samples, *image_shape = spec.input_shape
        return AudioVisualModel(
            samples=samples,
            image_shape=tuple(image_shape),  # type: ignore[arg-type]
            num_classes=spec.num_classes,
            fusion=str(p["fusion"]),
            **{
                key: int(p[key])
                for key in (
                    "depth",
                    "width",
                    "heads",
                    "mlp_ratio",
                    "audio_patch",
                    "image_patch",
                    "sample_rate",
                    "n_fft",
                    "hop_length",
                    "n_mels",
                )
            },
            dropout=float(p["dropout"]),
        )

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """One graph of two inputs, waveforms ("audio") and images ("image"), giving the
        fused logits."""
        rate = model.audio_tokens.front.sample_rate  # type: ignore[union-attr]
        part = OnnxPart(
            model,
            (splits.test[0], splits.test[1]),
            ("audio", "image"),
            "audio-image",
            "logits",
            {"sample_rate": rate},
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
        """Train with ``train_audio_visual``."""
        return train_audio_visual(model, splits, params, report, seed)  # type: ignore[arg-type]
