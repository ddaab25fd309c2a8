"""DINO / DINOv2-style self-distillation of a small Vision Transformer (architecture ``dino``).

A student ViT learns, without labels, to match the outputs of a teacher ViT on other crops
of the same images (Caron et al. 2021, Oquab et al. 2023):

- multi-crop: 2 global crops (the image's size) and ``local_crops`` small crops (about half
  its side), each a random resized crop with an optional flip and a small
  brightness/contrast jitter, made batched on tensors (``multi_crop``); the defaults are
  milder than DINO's ImageNet recipe, which makes tiny images' views too unlike to learn
  from (on digits it collapses to the uniform output);
- the teacher is an exponential moving average of the student, its momentum rising from
  ``teacher_momentum`` to 1 on a cosine; or, with ``distill_from``, a larger trained
  ``dino`` checkpoint, frozen (distillation);
- teacher outputs are centered (an EMA ``center``, ``center_momentum``) and sharpened
  (temperature ``teacher_temp``, warmed up from ``warmup_teacher_temp``); the student's
  temperature is ``STUDENT_TEMP``;
- a DINO head: MLP (batch-normed with ``head_bn``, as DINO's ``use_bn_in_head``: without
  it a fresh tiny ViT's nearly identical cls tokens collapse) -> bottleneck ->
  L2-normalised features -> weight-normalised prototypes (``prototypes``, norm fixed to 1);
- optionally the iBOT masked-token loss (``ibot_weight``): patch tokens of the student's
  global crops are masked and predict the teacher's prototype distribution of the same
  patches (head shared, own center), and the KoLeo regulariser (``koleo_weight``) on the
  student's cls features (Sablayrolles et al. 2019).

Feature quality is measured on labeled splits: the teacher's (distillation: the
student's) cls features of train vs val give a weighted k-NN accuracy (cosine, k=20, as
in DINO) and a linear probe (logistic regression, LBFGS) accuracy; the study may rank by
``val_knn_accuracy`` or ``val_linear_accuracy``. ``build`` returns a ``DINOModel`` whose
``forward``/``forward_features`` map images to cls embeddings, so a trained model is an
embedder; at the end of self-distillation the teacher's weights (those measured) are
copied into it, so a trial's checkpoint holds the teacher.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import (
    EPOCHS,
    LAYERS,
    NON_NEGATIVE,
    PATCH,
    POSITIVE,
    PROBABILITY,
    RATIO,
    SIZE,
    TRAINER_RANGES,
    Architecture,
    DataSpec,
    OnnxPart,
    Range,
    Splits,
    floats,
    ints,
)
from autoplat.core.training import (
    EVAL_BATCH_SIZE,
    TRAINER_PARAMS,
    TrialFailed,
    autocast,
    check_finite,
    load_checkpoint,
    start_training,
    warmup_cosine,
)
from autoplat.plugins.architectures.vit import ViT
from autoplat.plugins.layers import VisionTransformer

STUDENT_TEMP = 0.1
KNN_K = 20
KNN_TEMPERATURE = 0.07
CLIP_GRAD = 3.0  # max gradient norm, as in DINO
MASK_PROBABILITY = 0.5  # share of images whose global crops get iBOT masks (DINOv2)
MASK_RATIO = (0.1, 0.5)  # share of patches masked in such an image (DINOv2)
ASPECT_RATIO = (3 / 4, 4 / 3)
PROBE_STEPS = 100  # LBFGS iterations of the linear probe
PROBE_WEIGHT_DECAY = 1e-3

Report = Callable[[int, dict[str, float]], None]


# ---------------------------------------------------------------------------- model


class DINOBackbone(VisionTransformer):
    """The ViT without a classifier: cls and patch tokens for any image size that is a
    multiple of the patch size (position embeddings are interpolated for small crops),
    with a learned mask token for iBOT."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: int,
        patch_size: int,
        dropout: float,
    ) -> None:
        super().__init__(input_shape, 1, depth, width, heads, mlp_ratio, patch_size, dropout)
        self.head = nn.Identity()
        self.embed_dim = width
        self.patch_size = patch_size
        self.grid = (input_shape[1] // patch_size, input_shape[2] // patch_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))

    def _pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        if torch.jit.is_tracing() or (rows, cols) == self.grid:
            return self.pos_embed  # (an export traces full-size images: no interpolation)
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(rows, cols), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised tokens (batch, 1 + patches, width); ``masks`` (batch, patches) bool
        replaces those patch embeddings by the mask token."""
        x = self.patch_embed(x)
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self._pos_embed(rows, cols))
        return self.norm(self.blocks(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The cls embedding (batch, width)."""
        return self.forward_tokens(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class DINOHead(nn.Module):
    """MLP -> bottleneck -> L2 normalisation -> weight-normalised prototypes (norm 1)."""

    def __init__(
        self, width: int, hidden: int, bottleneck: int, prototypes: int, batch_norm: bool = False
    ) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()

        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            norm(),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            norm(),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine similarities of ``x``'s bottleneck features to the prototypes, in [-1, 1]."""
        shape = x.shape
        z = F.normalize(self.mlp(x.reshape(-1, shape[-1])), dim=-1).reshape(*shape[:-1], -1)
        return z @ F.normalize(self.prototypes, dim=-1).t()


class DINOModel(nn.Module):
    """A ``DINOBackbone`` and its ``DINOHead``; ``forward`` gives the cls embedding."""

    def __init__(self, backbone: DINOBackbone, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


# ---------------------------------------------------------------------------- crops


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_resized_crop(
    x: torch.Tensor,
    size: tuple[int, int],
    scale: tuple[float, float],
    generator: torch.Generator,
    flip_prob: float = 0.5,
    jitter: float = 0.0,
) -> torch.Tensor:
    """One random resized crop per image of ``x`` (batch, C, H, W), resized to ``size``.

    Each crop covers ``scale`` (a range) of the image's area with an aspect ratio in
    ``ASPECT_RATIO``, lies inside the image, is flipped left-right with ``flip_prob`` and
    has its contrast and brightness scaled by factors in ``1 +- jitter``; values stay in
    the batch's range. Random numbers come from ``generator`` (on the CPU).
    """
    n, channels = x.shape[:2]
    area = _uniform(n, *scale, generator)
    log_ratio = _uniform(n, math.log(ASPECT_RATIO[0]), math.log(ASPECT_RATIO[1]), generator)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # fractions of the image's width and height
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (2 * torch.rand(n, generator=generator) - 1) * (1 - w)
    cy = (2 * torch.rand(n, generator=generator) - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=generator) < flip_prob, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [n, channels, *size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        contrast = _uniform(n, 1 - jitter, 1 + jitter, generator).to(x.device, x.dtype)
        brightness = _uniform(n, 1 - jitter, 1 + jitter, generator).to(x.device, x.dtype)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast.view(-1, 1, 1, 1) + mean) * brightness.view(-1, 1, 1, 1)
        out = out.clamp(x.min(), x.max())
    return out


def local_crop_size(image_size: int, patch_size: int, fraction: float = 0.5) -> int:
    """The side of a local crop: about ``fraction`` of the image's, a multiple of the patch."""
    return patch_size * max(1, round(image_size * fraction / patch_size))


def multi_crop(
    x: torch.Tensor,
    local_crops: int,
    local_size: tuple[int, int],
    generator: torch.Generator,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.1, 0.4),
    flip_prob: float = 0.5,
    jitter: float = 0.1,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two global crops (``x``'s size) and ``local_crops`` local crops (``local_size``)."""
    full = (x.shape[2], x.shape[3])
    globals_ = [
        random_resized_crop(x, full, global_scale, generator, flip_prob, jitter) for _ in range(2)
    ]
    locals_ = [
        random_resized_crop(x, local_size, local_scale, generator, flip_prob, jitter)
        for _ in range(local_crops)
    ]
    return globals_, locals_


def random_masks(
    n: int,
    patches: int,
    generator: torch.Generator,
    probability: float = MASK_PROBABILITY,
    ratio: tuple[float, float] = MASK_RATIO,
) -> torch.Tensor:
    """iBOT masks (n, patches), bool: with ``probability`` an image masks a random
    ``ratio`` share of its patches (at least one), else none."""
    masked = torch.rand(n, generator=generator) < probability
    counts = (_uniform(n, *ratio, generator) * patches).round().clamp(min=1, max=patches)
    counts = torch.where(masked, counts, torch.zeros_like(counts))
    ranks = torch.rand(n, patches, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < counts.unsqueeze(1)


# ---------------------------------------------------------------------------- losses


def teacher_probs(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """Centered and sharpened teacher distribution: softmax((logits - center) / temp)."""
    return F.softmax((logits - center) / temp, dim=-1)


def updated_center(center: torch.Tensor, logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """The EMA center after a batch: ``center * m + mean(logits) * (1 - m)``."""
    batch = logits.reshape(-1, logits.shape[-1]).mean(dim=0, keepdim=True)
    return center * momentum + batch * (1 - momentum)


def dino_loss(
    student_logits: Sequence[torch.Tensor],
    teacher_dists: Sequence[torch.Tensor],
    student_temp: float = STUDENT_TEMP,
) -> torch.Tensor:
    """Cross-entropy of every teacher view's distribution with every other student view.

    ``student_logits``: one (batch, prototypes) tensor per view, the teacher's (global)
    views first; ``teacher_dists``: the teacher's distributions of its views. Pairs of a
    view with itself are skipped; the loss is the mean over the remaining pairs.
    """
    log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student_logits]
    total, terms = torch.zeros((), device=log_probs[0].device), 0
    for iq, q in enumerate(teacher_dists):
        for v, log_p in enumerate(log_probs):
            if v == iq:
                continue
            total = total + torch.sum(-q * log_p, dim=-1).mean()
            terms += 1
    return total / max(1, terms)


def ibot_loss(
    student_logits: torch.Tensor,
    teacher_dists: torch.Tensor,
    masks: torch.Tensor,
    student_temp: float = STUDENT_TEMP,
) -> torch.Tensor:
    """iBOT's masked-token loss: cross-entropy of the teacher's patch distributions with the
    student's at masked patches, averaged per image, then over images with a mask.

    ``student_logits``, ``teacher_dists``: (batch, patches, prototypes); ``masks``: (batch,
    patches) bool. Zero (and still differentiable) when nothing is masked.
    """
    per_token = torch.sum(-teacher_dists * F.log_softmax(student_logits / student_temp, -1), -1)
    masks = masks.to(per_token.dtype)
    weights = masks / masks.sum(dim=1, keepdim=True).clamp(min=1)
    images = (masks.sum(dim=1) > 0).sum().clamp(min=1)
    return (per_token * weights).sum() / images


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo: minus the mean log distance of each L2-normalised row to its nearest other row."""
    x = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)
        nearest = dots.argmax(dim=1)
    distances = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distances + eps).mean()


def teacher_momentum_at(step: int, total_steps: int, base: float) -> float:
    """Cosine schedule of the EMA momentum from ``base`` at step 0 to 1 at ``total_steps``."""
    progress = min(1.0, step / max(1, total_steps))
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


def teacher_temp_at(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear warmup of the teacher temperature from ``start`` to ``end``, then ``end``."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def extract_features(backbone: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The cls features of ``x`` (float, on the CPU), in large eval batches."""
    was_training = backbone.training
    backbone.eval()
    parts = []
    for start in range(0, len(x), EVAL_BATCH_SIZE):
        with autocast(device):
            feats = backbone.forward_features(x[start : start + EVAL_BATCH_SIZE].to(device))
        parts.append(feats.float().cpu())
    backbone.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, 1)


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """DINO's weighted k-NN: the k most cosine-similar train features vote, weighted by
    ``exp(similarity / temperature)``."""
    if len(labels) == 0:
        return 0.0
    train = F.normalize(train_features, dim=1)
    num_classes = int(max(train_labels.max(), labels.max())) + 1
    k = min(k, len(train))
    correct = 0
    for start in range(0, len(features), EVAL_BATCH_SIZE):
        query = F.normalize(features[start : start + EVAL_BATCH_SIZE], dim=1)
        sims, idx = (query @ train.t()).topk(k, dim=1)
        votes = torch.zeros(len(query), num_classes)
        votes.scatter_add_(1, train_labels[idx], (sims / temperature).exp())
        correct += int((votes.argmax(dim=1) == labels[start : start + EVAL_BATCH_SIZE]).sum())
    return correct / len(labels)


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    evals: Sequence[tuple[torch.Tensor, torch.Tensor]],
    steps: int = PROBE_STEPS,
    weight_decay: float = PROBE_WEIGHT_DECAY,
) -> list[float]:
    """Fit a multinomial logistic regression on standardised frozen features (LBFGS) and
    return its accuracy on each ``(features, labels)`` of ``evals``."""
    mean, std = train_features.mean(dim=0), train_features.std(dim=0) + 1e-6
    z = ((train_features - mean) / std).detach()
    num_classes = int(max([int(train_labels.max())] + [int(y.max()) for _, y in evals if len(y)]))
    weight = torch.zeros(z.shape[1], num_classes + 1, requires_grad=True)
    bias = torch.zeros(num_classes + 1, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (
            F.cross_entropy(z @ weight + bias, train_labels) + weight_decay * weight.square().sum()
        )
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    out = []
    with torch.no_grad():
        for features, labels in evals:
            logits = ((features - mean) / std) @ weight + bias
            out.append(
                float((logits.argmax(dim=1) == labels).float().mean()) if len(labels) else 0.0
            )
    return out


# ---------------------------------------------------------------------------- trainer


def _hyper(params: dict[str, Any]) -> dict[str, Any]:
    return {**TRAINER_PARAMS, **DINO.trainer_params, **params}


def _check_hyper(hp: dict[str, Any]) -> None:
    checks = [
        (int(hp["epochs"]) >= 1, "epochs must be >= 1"),
        (int(hp["batch_size"]) >= 2, "batch_size must be >= 2"),
        (int(hp["local_crops"]) >= 0, "local_crops must be >= 0"),
        (0 <= float(hp["teacher_momentum"]) <= 1, "teacher_momentum must be in [0, 1]"),
        (0 <= float(hp["center_momentum"]) <= 1, "center_momentum must be in [0, 1]"),
        (float(hp["teacher_temp"]) > 0, "teacher_temp must be > 0"),
        (float(hp["warmup_teacher_temp"]) > 0, "warmup_teacher_temp must be > 0"),
        (float(hp["ibot_weight"]) >= 0, "ibot_weight must be >= 0"),
        (float(hp["koleo_weight"]) >= 0, "koleo_weight must be >= 0"),
        (0 < float(hp["global_scale_min"]) <= 1, "global_scale_min must be in (0, 1]"),
        (
            0 < float(hp["local_scale_min"]) <= float(hp["local_scale_max"]) <= 1,
            "local_scale_min <= local_scale_max must be in (0, 1]",
        ),
        (int(hp["eval_every"]) >= 1, "eval_every must be >= 1"),
    ]
    for ok, why in checks:
        if not ok:
            raise TrialFailed(f"dino: {why}")


def load_teacher(
    path: str | Path, hp: dict[str, Any], student: DINOModel, spec: DataSpec
) -> DINOModel:
    """A frozen teacher from a ``dino`` checkpoint (a ``DINOModel`` state_dict).

    Its architecture is read off the checkpoint's shapes; ``teacher_width``,
    ``teacher_depth``, ``teacher_mlp_ratio`` and ``teacher_patch_size``, when set (> 0),
    must agree with it. ``teacher_heads`` (0: the student's) cannot be read off and must
    be right.

    Raises:
        TrialFailed: The file is missing, is not a dino checkpoint, disagrees with the
            teacher params, or has a different number of prototypes than the student.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrialFailed(f"dino: distill_from {path} is not a file (give an absolute path)")
    try:
        state = load_checkpoint(path)
        found = {
            "width": int(state["backbone.cls_token"].shape[-1]),
            "depth": len({k.split(".")[2] for k in state if k.startswith("backbone.blocks.")}),
            "patch_size": int(state["backbone.patch_embed.weight"].shape[-1]),
        }
        found["mlp_ratio"] = int(state["backbone.blocks.0.mlp.0.weight"].shape[0]) // found["width"]
        hidden = int(state["head.mlp.0.weight"].shape[0])
        batch_norm = "head.mlp.1.running_mean" in state
        prototypes, bottleneck = (int(d) for d in state["head.prototypes"].shape)
    except (KeyError, RuntimeError, OSError, ValueError) as exc:
        raise TrialFailed(f"dino: {path} is not a dino checkpoint ({exc})") from None
    for key, value in found.items():
        given = int(hp[f"teacher_{key}"])
        if given and given != value:
            raise TrialFailed(f"dino: teacher_{key} is {given} but {path} has {value}")
    if prototypes != student.head.prototypes.shape[0]:
        raise TrialFailed(
            f"dino: the teacher has {prototypes} prototypes, the student "
            f"{student.head.prototypes.shape[0]}; set prototypes = {prototypes}"
        )
    heads = int(hp["teacher_heads"]) or student.backbone.blocks[0].attn.heads
    if found["width"] % heads:
        raise TrialFailed(f"dino: teacher width {found['width']} is not divisible by {heads} heads")
    backbone = DINOBackbone(
        spec.input_shape,
        found["depth"],
        found["width"],
        heads,
        found["mlp_ratio"],
        found["patch_size"],
        0.0,
    )
    head = DINOHead(found["width"], hidden, bottleneck, prototypes, batch_norm=batch_norm)
    teacher = DINOModel(backbone, head)
    try:
        teacher.load_state_dict(state)
    except RuntimeError as exc:
        raise TrialFailed(f"dino: {path} does not fit a teacher for this data: {exc}") from None
    return teacher


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: no decay on biases, norms and learned tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        skip = param.ndim < 2 or name.endswith(("cls_token", "pos_embed", "mask_token"))
        (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train_dino(
    model: DINOModel,
    splits: Splits,
    params: dict[str, Any],
    report: Report,
    seed: int,
) -> dict[str, float]:
    """Self-distill ``model`` on the images of ``splits`` (labels only for evaluation).

    Every epoch reports ``train_loss``; with labels also ``val_knn_accuracy`` and
    ``val_linear_accuracy`` (measured at epoch 1, every ``eval_every`` epochs and the
    last, carried over in between) and ``val_accuracy`` (= the linear probe's); the last
    report adds ``test_knn_accuracy``, ``test_linear_accuracy`` and ``test_accuracy``.

    Raises:
        TrialFailed: A param is out of range, the loss became NaN or infinite, or the
            ``distill_from`` teacher cannot be loaded.
    """
    hp = _hyper(params)
    _check_hyper(hp)
    epochs, batch_size, generator, device = start_training(model, hp, seed)

    distill = bool(hp["distill_from"])
    if distill:
        teacher = load_teacher(hp["distill_from"], hp, model, splits.spec)
    else:
        teacher = copy.deepcopy(model)
    teacher.to(device).eval()
    teacher.head.train()  # batch statistics in a batch-normed head, as in DINO
    for p in teacher.parameters():
        p.requires_grad_(False)
    eval_backbone = model.backbone if distill else teacher.backbone

    x_train = splits.train[0].to(device)
    n_train = len(x_train)
    labeled = all(_labels(part) is not None for part in (splits.train, splits.val, splits.test))
    _, rows, cols = x_train.shape[1:]
    patch = model.backbone.patch_size
    local_size = (local_crop_size(rows, patch), local_crop_size(cols, patch))
    local_crops = int(hp["local_crops"])
    crop_args = {
        "global_scale": (float(hp["global_scale_min"]), 1.0),
        "local_scale": (float(hp["local_scale_min"]), float(hp["local_scale_max"])),
        "flip_prob": float(hp["flip_prob"]),
        "jitter": float(hp["jitter"]),
    }
    ibot_weight, koleo_weight = float(hp["ibot_weight"]), float(hp["koleo_weight"])
    if ibot_weight and teacher.backbone.grid != model.backbone.grid:
        raise TrialFailed(
            "dino: ibot_weight needs the teacher's patch grid to equal the student's "
            f"({teacher.backbone.grid} vs {model.backbone.grid})"
        )

    steps_per_epoch = math.ceil(n_train / batch_size)
    total_steps = epochs * steps_per_epoch
    temp_warmup_steps = min(int(hp["teacher_temp_warmup_epochs"]) * steps_per_epoch, total_steps)
    freeze_steps = int(hp["freeze_last_layer_epochs"]) * steps_per_epoch
    optimizer = torch.optim.AdamW(
        _param_groups(model, float(hp["weight_decay"])), lr=float(hp["lr"])
    )
    scheduler = warmup_cosine(optimizer, hp, steps_per_epoch)
    prototypes = model.head.prototypes.shape[0]
    center = torch.zeros(1, prototypes, device=device)
    patch_center = torch.zeros(1, prototypes, device=device)

    metrics: dict[str, float] = {}
    measured: dict[str, float] = {}
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        order = torch.randperm(n_train, generator=generator).to(device)
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # KoLeo and batch statistics need two images
                continue
            n = len(idx)
            globals_, locals_ = multi_crop(
                x_train[idx], local_crops, local_size, generator, **crop_args
            )
            global_batch = torch.cat(globals_)
            temp = teacher_temp_at(
                step, temp_warmup_steps, float(hp["warmup_teacher_temp"]), float(hp["teacher_temp"])
            )
            masks = None
            if ibot_weight:
                grid = model.backbone.grid
                masks = random_masks(2 * n, grid[0] * grid[1], generator).to(device)

            with torch.no_grad(), autocast(device):
                t_tokens = teacher.backbone.forward_tokens(global_batch)
                t_cls = teacher.head(t_tokens[:, 0]).float()
                t_patch = teacher.head(t_tokens[:, 1:]).float() if ibot_weight else None
            t_dists = teacher_probs(t_cls, center, temp).chunk(2)

            with autocast(device):
                s_tokens = model.backbone.forward_tokens(global_batch, masks)
                s_cls_feats = s_tokens[:, 0]
                s_cls = [s_cls_feats]
                if locals_:
                    s_cls.append(model.backbone.forward_features(torch.cat(locals_)))
                s_logits = model.head(torch.cat(s_cls)).float().chunk(2 + local_crops)
                s_patch = model.head(s_tokens[:, 1:]).float() if ibot_weight else None
            loss = dino_loss(s_logits, t_dists)
            if ibot_weight:
                assert s_patch is not None and t_patch is not None and masks is not None
                t_patch_dists = teacher_probs(t_patch, patch_center, temp)
                loss = loss + ibot_weight * ibot_loss(s_patch, t_patch_dists, masks)
            if koleo_weight:
                loss = loss + koleo_weight * sum(koleo_loss(c) for c in s_cls_feats.chunk(2))

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP_GRAD)
            if step < freeze_steps:
                model.head.prototypes.grad = None
            optimizer.step()
            scheduler.step()
            if not distill:
                ema_update(
                    teacher,
                    model,
                    teacher_momentum_at(step, total_steps, float(hp["teacher_momentum"])),
                )
            center = updated_center(center, t_cls, float(hp["center_momentum"]))
            if t_patch is not None:
                patch_center = updated_center(patch_center, t_patch, float(hp["center_momentum"]))
            loss_sum += loss.detach() * n
            step += 1
        train_loss = loss_sum.item() / n_train
        check_finite(train_loss, epoch)

        metrics = {"train_loss": train_loss}
        last = epoch == epochs
        if labeled and (epoch == 1 or epoch % int(hp["eval_every"]) == 0 or last):
            measured = evaluate_features(eval_backbone, splits, device, test=last)
        metrics |= measured
        if last and not distill:
            model.load_state_dict(teacher.state_dict())  # the checkpoint holds what was measured
        report(epoch, metrics)
    return metrics


def _labels(part: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    """A split's class labels: its first 1-d integer tensor with one entry per image, e.g.
    y of (x, y) or of (images, token ids, labels, ...); None when it has none."""
    for tensor in part[1:]:
        if tensor.ndim == 1 and not tensor.is_floating_point() and len(tensor) == len(part[0]):
            return tensor
    return None


def evaluate_features(
    backbone: nn.Module, splits: Splits, device: torch.device, test: bool = False
) -> dict[str, float]:
    """k-NN and linear-probe accuracies of ``backbone``'s cls features on val (and test)."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (
        (part[0], _labels(part)) for part in (splits.train, splits.val, splits.test)
    )
    assert y_tr is not None and y_va is not None and y_te is not None
    f_tr = extract_features(backbone, x_tr, device)
    f_va = extract_features(backbone, x_va, device)
    y_tr, y_va = y_tr.cpu(), y_va.cpu()
    evals = [(f_va, y_va)]
    if test:
        f_te, y_te = extract_features(backbone, x_te, device), y_te.cpu()
        evals.append((f_te, y_te))
    linear = linear_probe(f_tr, y_tr, evals)
    out = {
        "val_knn_accuracy": knn_accuracy(f_tr, y_tr, f_va, y_va),
        "val_linear_accuracy": linear[0],
        "val_accuracy": linear[0],
    }
    if test:
        out |= {
            "test_knn_accuracy": knn_accuracy(f_tr, y_tr, f_te, y_te),
            "test_linear_accuracy": linear[1],
            "test_accuracy": linear[1],
        }
    return out


# ---------------------------------------------------------------------------- plugin


class DINO(Architecture):
    """DINO self-distillation of a ViT; model params: the ViT's (depth, width, heads,
    mlp_ratio, patch_size, dropout) and the head's (prototypes, head_hidden,
    head_bottleneck); the trainer's in ``trainer_params``."""

    name: ClassVar[str] = "dino"
    task: ClassVar[str] = "self_supervised"
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    default_space: ClassVar[str] = "dino"
    defaults: ClassVar[dict[str, Any]] = {
        **ViT.defaults,
        "dropout": 0.0,
        "prototypes": 256,
        "head_hidden": 256,
        "head_bottleneck": 64,
        "head_bn": True,
    }
    trainer_params: ClassVar[dict[str, Any]] = {
        # crops: milder than DINO's ImageNet recipe (0.4 / 0.05-0.4, flips, 6+ local crops);
        # on digits: val k-NN 0.87 vs 0.75 after 6-8 epochs
        "local_crops": 2,
        "global_scale_min": 0.6,
        "local_scale_min": 0.25,
        "local_scale_max": 0.6,
        "flip_prob": 0.0,
        "jitter": 0.1,
        "teacher_momentum": 0.99,
        "center_momentum": 0.9,
        "teacher_temp": 0.04,
        "warmup_teacher_temp": 0.04,
        "teacher_temp_warmup_epochs": 0,
        "freeze_last_layer_epochs": 0,
        "ibot_weight": 0.0,
        "koleo_weight": 0.0,
        "eval_every": 1,
        "distill_from": "",  # a dino checkpoint: distill it (frozen) instead of an EMA teacher
        "teacher_width": 0,  # teacher_*: 0 = as in the checkpoint (heads: as the student's)
        "teacher_depth": 0,
        "teacher_heads": 0,
        "teacher_mlp_ratio": 0,
        "teacher_patch_size": 0,
    }
    metrics: ClassVar[dict[str, str]] = {
        "val_knn_accuracy": "maximize",
        "val_linear_accuracy": "maximize",
        "train_loss": "minimize",
    }
    param_ranges: ClassVar[dict[str, Range]] = {
        **ViT.param_ranges,
        "prototypes": SIZE,
        "head_hidden": SIZE,
        "head_bottleneck": SIZE,
        "batch_size": replace(TRAINER_RANGES["batch_size"], low=2),
        "local_crops": ints(0, 64, "each crop is another forward pass"),
        "global_scale_min": floats(0, 1, open_low=True),
        "local_scale_min": floats(0, 1, open_low=True),
        "local_scale_max": floats(0, 1, open_low=True),
        "flip_prob": PROBABILITY,
        "jitter": NON_NEGATIVE,
        "teacher_momentum": PROBABILITY,
        "center_momentum": PROBABILITY,
        "teacher_temp": POSITIVE,
        "warmup_teacher_temp": POSITIVE,
        "teacher_temp_warmup_epochs": replace(EPOCHS, low=0),
        "freeze_last_layer_epochs": replace(EPOCHS, low=0),
        "ibot_weight": NON_NEGATIVE,
        "koleo_weight": NON_NEGATIVE,
        "eval_every": EPOCHS,
        # 0: as in the distill_from checkpoint
        "teacher_width": replace(SIZE, low=0),
        "teacher_depth": replace(LAYERS, low=0),
        "teacher_heads": replace(LAYERS, low=0),
        "teacher_mlp_ratio": replace(RATIO, low=0),
        "teacher_patch_size": replace(PATCH, low=0),
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build a DINO model (for ``spec``'s images), or None."""
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        vit_keys = {k: p[k] for k in ViT.defaults}
        reason = ViT().check_params(vit_keys, spec)
        return reason.replace("vit:", "dino:", 1) if reason else None

    def build(self, params: dict[str, Any], spec: DataSpec) -> DINOModel:
        """The student: a ``DINOModel`` (backbone + DINO head); ``forward`` gives cls features.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        width = int(p["width"])
        backbone = DINOBackbone(
            spec.input_shape,
            depth=int(p["depth"]),
            width=width,
            heads=int(p["heads"]),
            mlp_ratio=int(p["mlp_ratio"]),
            patch_size=int(p["patch_size"]),
            dropout=float(p["dropout"]),
        )
        head = DINOHead(
            width,
            int(p["head_hidden"]),
            int(p["head_bottleneck"]),
            int(p["prototypes"]),
            batch_norm=bool(p["head_bn"]),
        )
        return DINOModel(backbone, head)

    def train(
        self,
        model: torch.nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Report,
        seed: int,
    ) -> dict[str, float]:
        """Self-distillation (``train_dino``)."""
        return train_dino(model, splits, params, report, seed)  # type: ignore[arg-type]

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """The feature extractor: the teacher's cls embedding (width) of full-size images."""
        backbone = model.backbone  # forward: the cls embedding, as DINOModel's
        return {"features": OnnxPart(backbone, (splits.test[0],), ("image",), "image", "embedding")}
