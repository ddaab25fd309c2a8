"""``av-superb``: an AV-SUPERB-style probe suite (Tseng et al. 2024) on ``av-suite`` data.

Each trial builds a representation (the upstream), pretrains it briefly on the suite's
pretraining split, freezes it, and fits light probes on its audio-only, visual-only and
fused features for each task of the suite (``scene``, ``event``, ``corr``; see
``autoplat.plugins.datasets.av_suite``).

Upstream: the ``audio-visual`` towers (``AudioVisualModel``: log-mel and image patch
tokens, ``depth`` transformer blocks, streams joined ``early``, ``mid`` or ``late``).
``modality`` says what it is:

- ``fused``: an audio-visual model with both towers; probed with audio only, the frame
  only, and both (``AudioVisualModel.embed``: the fused representation is
  ``[audio tokens' mean, image tokens' mean]`` after the shared blocks).
- ``audio`` / ``visual``: a unimodal model with that tower only (the other is not
  built); probed with its one modality.

``objective`` is how it is pretrained (AdamW, warmup and cosine decay, ``epochs`` passes
over the pretraining split's clips, no labels):

- ``contrastive``: InfoNCE (``temperature``) on projected pooled embeddings. ``fused``:
  audio-visual correspondence, each clip's audio against the batch's frames and back.
  ``audio`` / ``visual``: two augmented views of the same clip (audio: a circular time
  shift, gain and noise; frames: flips, a shift of up to 2 pixels and noise).
- ``none``: random weights, the baseline; only the log-mel batch norm's statistics are
  taken from the pretraining clips.

Probes (AV-SUPERB's frozen features + light downstream models): ``probe`` = ``linear``
or ``mlp`` (one hidden layer of ``probe_hidden``), fit with Adam for ``probe_steps``
full-batch steps on standardised frozen features of the pretraining split's clips with
their labels; cross-entropy for ``scene`` and ``corr``, per-event binary cross-entropy
for ``event``. Scored on the val (probe dev) and test splits: ``scene`` and ``corr`` by
accuracy, ``event`` by mAP (mean over events of average precision). Metrics, after the
last epoch: ``{val,test}_{task}_{acc|map}_{modality}`` for each modality probed (e.g.
``test_scene_acc_fused``) and ``{val,test}_superb_score``: the mean over the tasks of
the upstream's own modality's score (fused for ``fused``). Each epoch reports
``train_loss`` (none with ``objective = "none"``, which reports once).
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
    floats,
    ints,
    one_of,
)
from autoplat.core.training import (
    TRAINER_PARAMS,
    TrialFailed,
    start_training,
    train_epoch,
    warmup_cosine,
)
from autoplat.plugins.architectures.audio import FRONTEND_RANGES
from autoplat.plugins.architectures.audio_visual import (
    FUSIONS,
    AudioVisualModel,
    clip_and_frame_problem,
    encoder_problem,
    features,
)
from autoplat.plugins.av_superb_command import MODALITIES, SCORE, TASKS, metric
from autoplat.plugins.datasets.av_suite import (
    EVENTS,
    SCENE,
    SCENES,
    TASK,
    correspondence,
)
from autoplat.plugins.layers import BLOCK_RANGES

OBJECTIVES = ("none", "contrastive")
PROBES = ("linear", "mlp")
USE = {"audio": "audio", "visual": "image", "fused": "fused"}  # names of ``features``
PROBE_LR = 1e-2
PROBE_WEIGHT_DECAY = 1e-4


def probed(modality: str) -> tuple[str, ...]:
    """The modalities an upstream's features are probed with."""
    return MODALITIES if modality == "fused" else (modality,)


class AVSuperbModel(nn.Module):
    """An upstream (``AudioVisualModel`` towers) with its pretraining projections."""

    def __init__(
        self,
        encoder: AudioVisualModel,
        modality: str,
        objective: str,
        width: int,
        probe: dict[str, Any],
    ):
        super().__init__()
        if modality == "audio":  # a unimodal upstream has one tower
            encoder.image_tokens, encoder.image_blocks = None, None
        if modality == "visual":
            encoder.audio_tokens, encoder.audio_blocks = None, None
        encoder.head = None  # the probes are the heads
        self.encoder, self.modality, self.objective = encoder, modality, objective
        self.probe = probe  # how the frozen features are probed: kind, hidden, steps
        towers = ("audio", "visual") if modality == "fused" else (modality,)
        self.project = nn.ModuleDict(
            {t: nn.Linear(width, width) for t in towers} if objective == "contrastive" else {}
        )

    def forward(self, audio: torch.Tensor | None = None, image: torch.Tensor | None = None):
        """The upstream's representation of the modalities given."""
        return self.encoder.embed(audio, image)


class Part(nn.Module):
    """One way of embedding an upstream's inputs (``use``: audio, image or fused)."""

    def __init__(self, model: AVSuperbModel, use: str):
        super().__init__()
        self.model, self.use = model, use

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.use == "audio":
            return self.model(audio=inputs[0])
        if self.use == "image":
            return self.model(image=inputs[0])
        return self.model(inputs[0], inputs[1])


# -- pretraining ---------------------------------------------------------------------------
def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` matches row i of ``b`` among the batch."""
    logits = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def augment_audio(audio: torch.Tensor) -> torch.Tensor:
    """A view of each clip: a random circular time shift, gain (0.6-1.2) and noise."""
    n, length = audio.shape
    shift = torch.randint(0, length, (n, 1), device=audio.device)
    index = (torch.arange(length, device=audio.device) + shift) % length
    gain = torch.empty(n, 1, device=audio.device).uniform_(0.6, 1.2)
    return audio.gather(1, index) * gain + 0.01 * torch.randn_like(audio)


def augment_image(images: torch.Tensor) -> torch.Tensor:
    """A view of each frame: a random horizontal flip, a shift of up to 2 pixels, noise."""
    flip = torch.rand(len(images), 1, 1, 1, device=images.device) < 0.5
    out = torch.where(flip, images.flip(-1), images)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,)))
    return out.roll((dy, dx), dims=(2, 3)) + 0.03 * torch.randn_like(out)


def contrastive_loss(
    model: AVSuperbModel, audio: torch.Tensor, images: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The upstream's pretraining loss on one batch; see the module docstring."""
    project = model.project
    if model.modality == "fused":
        a = project["audio"](model(audio=audio))
        v = project["visual"](model(image=images))
    elif model.modality == "audio":
        a = project["audio"](model(audio=augment_audio(audio)))
        v = project["audio"](model(audio=augment_audio(audio)))
    else:
        a = project["visual"](model(image=augment_image(images)))
        v = project["visual"](model(image=augment_image(images)))
    return info_nce(a, v, temperature)


@torch.no_grad()
def calibrate(model: AVSuperbModel, audio: torch.Tensor, batch_size: int) -> None:
    """Set the log-mel batch norm's statistics from ``audio`` (the random baseline)."""
    if model.encoder.audio_tokens is None:
        return
    front = model.encoder.audio_tokens.front
    norm = front.norm
    norm.reset_running_stats()
    norm.momentum = None  # a cumulative average over the batches
    front.train()
    for start in range(0, len(audio), batch_size):
        front(audio[start : start + batch_size])
    norm.momentum = 0.1


# -- probes --------------------------------------------------------------------------------
def fit_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    evals: list[torch.Tensor],
    outputs: int,
    multilabel: bool,
    probe_params: dict[str, Any],
    seed: int,
) -> list[torch.Tensor]:
    """Fit a linear or MLP probe on standardised frozen features; its scores (logits) on
    each of ``evals``."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0) + 1e-6
    z = (train_x - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if probe_params["probe"] == "linear":
            probe: nn.Module = nn.Linear(z.shape[1], outputs)
        else:
            hidden = int(probe_params["probe_hidden"])
            probe = nn.Sequential(
                nn.Linear(z.shape[1], hidden), nn.GELU(), nn.Linear(hidden, outputs)
            )
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR, weight_decay=PROBE_WEIGHT_DECAY)
    target = train_y.float() if multilabel else train_y
    loss_fn = F.binary_cross_entropy_with_logits if multilabel else F.cross_entropy
    with torch.enable_grad():
        for _ in range(int(probe_params["probe_steps"])):
            optimizer.zero_grad()
            loss_fn(probe(z), target).backward()
            optimizer.step()
    with torch.no_grad():
        return [probe((x - mean) / std) for x in evals]


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float((scores.argmax(dim=1) == labels).float().mean())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The mean over classes with a positive of the average precision of ``scores``."""
    precisions = []
    ranks = torch.arange(1, len(scores) + 1, dtype=torch.float32)
    for c in range(targets.shape[1]):
        hits = targets[scores[:, c].argsort(descending=True), c].float()
        if hits.sum() > 0:
            precisions.append(float((hits.cumsum(0) / ranks * hits).sum() / hits.sum()))
    return sum(precisions) / max(1, len(precisions))


def task_data(
    task: str, split: tuple[torch.Tensor, ...]
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """A task's inputs (waveforms, images) and targets on one split."""
    if task == "corr":
        audio, images, match = correspondence(split)
        return (audio, images), match
    audio, images, labels = split
    return (audio, images), labels[:, SCENE] if task == "scene" else labels[:, EVENTS:]


def probe_metrics(
    model: AVSuperbModel, splits: Splits, device: torch.device, seed: int
) -> dict[str, float]:
    """Every probe's val and test score and the superb scores; see the module docstring."""
    out: dict[str, float] = {}
    for task in TASKS:
        parts = [task_data(task, split) for split in (splits.train, splits.val, splits.test)]
        multilabel = task == "event"
        targets = parts[0][1]
        outputs = targets.shape[1] if multilabel else {"scene": len(SCENES), "corr": 2}[task]
        for modality in probed(model.modality):
            x = [features(model.encoder, inputs, USE[modality], device) for inputs, _ in parts]
            scores = fit_probe(x[0], targets, x[1:], outputs, multilabel, model.probe, seed)
            for name, score, (_, target) in zip(("val", "test"), scores, parts[1:], strict=True):
                measure = mean_average_precision if multilabel else accuracy
                out[metric(name, task, modality)] = measure(score, target)
    for name in ("val", "test"):
        own = [out[metric(name, task, model.modality)] for task in TASKS]
        out[f"{name}_{SCORE}"] = sum(own) / len(own)
    return out


def train_av_superb(
    model: AVSuperbModel,
    splits: Splits,
    params: dict[str, Any],
    report: Callable[[int, dict[str, float]], None],
    seed: int,
) -> dict[str, float]:
    """Pretrain (``objective``), freeze, probe; see the module docstring.

    Raises:
        TrialFailed: The loss became NaN or infinite, or a trainer param is invalid.
    """
    hp = {**TRAINER_PARAMS, **AVSuperb.trainer_params, **params}
    epochs, batch_size, generator, device = start_training(model, hp, seed)
    if batch_size < 2 and model.objective == "contrastive":
        raise TrialFailed("av-superb: contrastive pretraining needs batch_size >= 2")
    audio, images = (t.to(device) for t in splits.train[:2])
    metrics: dict[str, float] = {}
    if model.objective == "none":
        calibrate(model, audio, batch_size)
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"])
        )
        scheduler = warmup_cosine(optimizer, hp, math.ceil(len(audio) / batch_size))
        temperature = float(hp["temperature"])

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            return contrastive_loss(model, audio[idx], images[idx], temperature)

        for epoch in range(1, epochs + 1):
            metrics = {
                "train_loss": train_epoch(
                    model, optimizer, scheduler, len(audio), batch_size, generator,
                    batch_loss, epoch,
                )
            }  # fmt: skip
            if epoch < epochs:
                report(epoch, metrics)
    metrics |= probe_metrics(model, splits, device, seed)  # on frozen features
    report(epochs, metrics)
    return metrics


# -- the architecture ----------------------------------------------------------------------
def _metric_names() -> dict[str, str]:
    names = {f"val_{SCORE}": "maximize", f"test_{SCORE}": "maximize"}
    for task in TASKS:
        for modality in MODALITIES:
            names |= {metric(split, task, modality): "maximize" for split in ("val", "test")}
    return names


class AVSuperb(Architecture):
    """Pretrain, freeze and probe a representation on the av-suite tasks; see the module
    docstring."""

    name: ClassVar[str] = "av-superb"
    task: ClassVar[str] = TASK
    modalities: ClassVar[tuple[str, ...]] = ("audio-image",)
    default_space: ClassVar[str] = "av-superb"
    defaults: ClassVar[dict[str, Any]] = {
        "modality": "fused",
        "objective": "contrastive",
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
        "hop_length": 128,
        "n_mels": 32,
        "probe": "mlp",
        "probe_hidden": 64,
        "probe_steps": 300,
    }
    trainer_params: ClassVar[dict[str, Any]] = {"temperature": 0.1}
    metrics: ClassVar[dict[str, str]] = _metric_names()
    param_ranges: ClassVar[dict[str, Range]] = {
        **FRONTEND_RANGES,
        **BLOCK_RANGES,
        "depth": LAYERS,
        "audio_patch": PATCH,
        "image_patch": PATCH,
        "temperature": floats(0, 10, open_low=True),
        "probe_hidden": ints(1, 65_536, "the cap prevents absurd allocations"),
        "probe_steps": ints(1, 100_000),
        "modality": one_of(*MODALITIES),
        "objective": one_of(*OBJECTIVES),
        "fusion": one_of(*FUSIONS),
        "probe": one_of(*PROBES),
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build the upstream (for ``spec``'s data), or None."""
        if (reason := self.unknown_params(params)) is not None:
            return reason
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if (reason := encoder_problem("av-superb", p, spec)) is not None:
            return reason
        return self.data_problem(p, spec) if spec is not None else None

    def data_problem(self, p: dict[str, Any], spec: DataSpec) -> str | None:
        """Why the params ``p`` do not fit ``spec``'s clips and frames, or None."""
        if spec.task != TASK or spec.modality != "audio-image" or len(spec.input_shape) != 4:
            return (
                "av-superb: needs the av-suite dataset's clips and frames (task av_suite, "
                f"input shape (samples, C, H, W)), got {spec.task} {spec.modality} data "
                f'shaped {spec.input_shape}; set [dataset] name = "av-suite"'
            )
        return clip_and_frame_problem("av-superb", p, spec.input_shape)

    def build(self, params: dict[str, Any], spec: DataSpec) -> AVSuperbModel:
        """Build the upstream; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        samples, *image_shape = spec.input_shape
        sizes = ("depth", "width", "heads", "mlp_ratio", "audio_patch", "image_patch")
        front = ("sample_rate", "n_fft", "hop_length", "n_mels")
        encoder = AudioVisualModel(
            samples=samples,
            image_shape=tuple(image_shape),  # type: ignore[arg-type]
            num_classes=1,
            fusion=str(p["fusion"]),
            dropout=float(p["dropout"]),
            **{key: int(p[key]) for key in (*sizes, *front)},
        )
        probe = {key: p[key] for key in ("probe", "probe_hidden", "probe_steps")}
        modality, objective = str(p["modality"]), str(p["objective"])
        return AVSuperbModel(encoder, modality, objective, int(p["width"]), probe)

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """One embedding graph per modality the upstream is probed with: "audio"
        (waveforms), "visual" (frames) and, for a fused upstream, "fused" (both)."""
        assert isinstance(model, AVSuperbModel)
        audio, images = splits.test[0], splits.test[1]
        rate = {"sample_rate": splits.spec.sample_rate}
        inputs = {
            "audio": ((audio,), ("audio",), "audio", rate),
            "visual": ((images,), ("image",), "image", {}),
            "fused": ((audio, images), ("audio", "image"), "audio-image", rate),
        }
        return {
            name: OnnxPart(Part(model, USE[name]), x, names, kind, "embedding", pre)
            for name, (x, names, kind, pre) in inputs.items()
            if name in probed(model.modality)
        }

    def train(
        self,
        model: torch.nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Callable[[int, dict[str, float]], None],
        seed: int,
    ) -> dict[str, float]:
        """Pretrain, freeze and probe with ``train_av_superb``."""
        return train_av_superb(model, splits, params, report, seed)  # type: ignore[arg-type]
