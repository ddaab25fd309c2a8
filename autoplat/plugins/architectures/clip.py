"""CLIP: contrastive image-text pretraining with an image tower, a text tower and InfoNCE.

The model (``CLIPModel``) keeps its towers as separate submodules so each can be exported
on its own: ``image_tower(images) -> (B, embed_dim)`` and ``text_tower(tokens) -> (B,
embed_dim)`` (unnormalized, projection included); ``encode_image``/``encode_text`` return
them L2-normalized and ``forward(images, tokens)`` returns ``(image_emb, text_emb,
logit_scale)`` with ``logit_scale = exp(log_scale)`` clamped at 100 as in CLIP.

Data: a contrastive dataset's splits (see ``autoplat.plugins.datasets.shapes``): train is
``(images, tokens, labels)``, val and test optionally add ``prompt_tokens``
(num_classes, text_length) for zero-shot classification; labels are -1 when unlabeled.
Token id 0 is padding.

Training (``train_contrastive``): AdamW and a cosine schedule as ``train_classification``;
the loss is the symmetric InfoNCE of CLIP, with every pair of identical captions in a
batch counted as positives (equal weight) so duplicate captions are not pushed apart; it
reduces to CLIP's loss when the batch's captions are distinct.

Metrics (every epoch ``val_*``, on the last epoch also ``test_*``):

- ``recall_at_1``/``recall_at_5``: mean of image->text and text->image recall@k over the
  whole split; a retrieved item counts when it is the query's pair or shares its caption
  (identical tokens) or its image (identical pixels). The directions are reported too
  (``i2t_recall_at_k``, ``t2i_recall_at_k``).
- ``zeroshot_accuracy``: the labeled images classified by their nearest prompt embedding
  (only when the split has prompts and labels); also reported as ``accuracy`` so
  ``val_accuracy`` and ``test_accuracy`` mean the same for CLIP as for classifiers.
- ``loss``: the contrastive loss over the split in fixed batches of ``EVAL_LOSS_BATCH``
  (comparable between trials whatever their batch_size).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import (
    DROPOUT,
    LAYERS,
    PATCH,
    RATIO,
    SIZE,
    Architecture,
    DataSpec,
    OnnxPart,
    Range,
    Splits,
    floats,
    one_of,
)
from autoplat.core.training import (
    EVAL_BATCH_SIZE,
    TRAINER_PARAMS,
    autocast,
    start_training,
    train_epoch,
    warmup_cosine,
)
from autoplat.plugins.layers import Block, ConvTower, VisionTransformer

MAX_LOGIT_SCALE = 100.0
EVAL_LOSS_BATCH = 256
PAD_ID = 0  # autoplat.plugins.datasets.captions.PAD_ID


# -- towers -----------------------------------------------------------------------------
class TextTransformer(nn.Module):
    """Token and position embeddings, transformer blocks, pooling and a projection.

    ``causal``: each token attends to itself and earlier ones (as in CLIP); otherwise to
    every non-pad token. ``pooling``: "eos" takes the last non-pad token (``[EOS]``),
    "mean" averages the non-pad tokens.
    """

    def __init__(
        self,
        vocab_size: int,
        text_length: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: int,
        dropout: float,
        embed_dim: int,
        causal: bool,
        pooling: str,
    ) -> None:
        super().__init__()
        self.causal, self.pooling = causal, pooling
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, text_length, width))
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        valid = tokens != PAD_ID  # (B, N)
        mask = valid[:, None, None, :]  # keys that may be attended to
        if self.causal:
            mask = mask & torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        x = self.token_embed(tokens) + self.pos_embed[:, :n]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        weights = valid.to(x.dtype)
        if self.pooling == "mean":
            pooled = (x * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
        else:  # the last non-pad token
            last = (weights.sum(1).long() - 1).clamp(min=0)
            pooled = x[torch.arange(x.shape[0], device=x.device), last]
        return self.head(pooled)


class Normalized(nn.Module):
    """A tower with its output L2-normalized, as ``encode_image``/``encode_text`` give it."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(x).float(), dim=-1)


class CLIPModel(nn.Module):
    """An image tower, a text tower and a learnable temperature (see the module docstring)."""

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, temperature_init: float):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))

    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(images).float(), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_tower(tokens).float(), dim=-1)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale()


# -- loss and metrics ----------------------------------------------------------------------
def same_rows(a: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: rows i and j of ``a`` (N, ...) are identical."""
    flat = a.reshape(len(a), -1)
    _, ids = torch.unique(flat, dim=0, return_inverse=True)
    return ids[:, None] == ids[None, :]


def contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE; ``positives`` (B, B) bool spreads each row's target over its
    positives (default: the diagonal, CLIP's loss)."""
    logits = logit_scale * image_emb.float() @ text_emb.float().T
    if positives is None:
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    target = positives.float() / positives.sum(1, keepdim=True)
    target_t = positives.T.float() / positives.T.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target_t)) / 2


def recall_at_k(
    queries: torch.Tensor, keys: torch.Tensor, matches: torch.Tensor, ks: tuple[int, ...]
) -> dict[int, float]:
    """Fraction of queries with a match among their top-k keys by dot product, per k.

    ``matches`` (Q, K) bool marks the right keys of each query; computed in chunks.
    """
    hits = {k: 0 for k in ks}
    kmax = min(max(ks), len(keys))
    for start in range(0, len(queries), EVAL_BATCH_SIZE):
        sims = queries[start : start + EVAL_BATCH_SIZE] @ keys.T
        top = sims.topk(kmax, dim=1).indices
        found = matches[start : start + EVAL_BATCH_SIZE].gather(1, top)
        for k in ks:
            hits[k] += int(found[:, :k].any(dim=1).sum())
    return {k: hits[k] / max(1, len(queries)) for k in ks}


@torch.inference_mode()
def embed(
    model: CLIPModel, images: torch.Tensor, tokens: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized image and text embeddings of a split, in large batches (float32)."""
    model.eval()
    image_parts, text_parts = [], []
    for start in range(0, len(images), EVAL_BATCH_SIZE):
        with autocast(device):
            image_parts.append(
                model.encode_image(images[start : start + EVAL_BATCH_SIZE].to(device))
            )
            text_parts.append(model.encode_text(tokens[start : start + EVAL_BATCH_SIZE].to(device)))
    return torch.cat(image_parts).float(), torch.cat(text_parts).float()


@torch.inference_mode()
def evaluate_contrastive(
    model: CLIPModel, split: tuple[torch.Tensor, ...], device: torch.device
) -> dict[str, float]:
    """Retrieval recall@1/5 (both directions), contrastive loss and zero-shot accuracy.

    ``split`` is ``(images, tokens, labels[, prompt_tokens])``; keys as in the module
    docstring, without the val_/test_ prefix.
    """
    images, tokens, labels = split[0], split[1], split[2]
    image_emb, text_emb = embed(model, images, tokens, device)
    scale = model.logit_scale().float()
    same_text = same_rows(tokens).to(device)
    matches = same_text | same_rows(images).to(device)
    i2t = recall_at_k(image_emb, text_emb, matches, (1, 5))
    t2i = recall_at_k(text_emb, image_emb, matches.T, (1, 5))
    loss_sum = 0.0
    for start in range(0, len(images), EVAL_LOSS_BATCH):
        stop = start + EVAL_LOSS_BATCH
        positives = same_text[start:stop, start:stop]
        loss = contrastive_loss(image_emb[start:stop], text_emb[start:stop], scale, positives)
        loss_sum += loss.item() * len(positives)
    metrics = {
        "loss": loss_sum / max(1, len(images)),
        "recall_at_1": (i2t[1] + t2i[1]) / 2,
        "recall_at_5": (i2t[5] + t2i[5]) / 2,
        "i2t_recall_at_1": i2t[1],
        "i2t_recall_at_5": i2t[5],
        "t2i_recall_at_1": t2i[1],
        "t2i_recall_at_5": t2i[5],
    }
    labeled = labels >= 0
    if len(split) > 3 and len(split[3]) and bool(labeled.any()):
        with autocast(device):
            prompt_emb = model.encode_text(split[3].to(device)).float()
        predicted = (image_emb[labeled.to(device)] @ prompt_emb.T).argmax(dim=1).cpu()
        accuracy = (predicted == labels[labeled]).float().mean().item()
        metrics |= {"zeroshot_accuracy": accuracy, "accuracy": accuracy}
    return metrics


def train_contrastive(
    model: CLIPModel,
    splits: Splits,
    params: dict[str, Any],
    report: Callable[[int, dict[str, float]], None],
    seed: int,
) -> dict[str, float]:
    """Train CLIP with AdamW and a cosine schedule, reporting after every epoch.

    Args:
        model: A ``CLIPModel``.
        splits: Contrastive splits (module docstring).
        params: The keys of ``TRAINER_PARAMS`` are read, others ignored.
        report: Called as ``report(epoch, metrics)`` with train_loss, logit_scale and the
            val metrics; the last call adds the test metrics.
        seed: Seeds torch and the batch order.

    Returns:
        The metrics of the last report.

    Raises:
        TrialFailed: The loss became NaN or infinite, or epochs or batch_size is below 1.
    """
    hp = {key: params.get(key, default) for key, default in TRAINER_PARAMS.items()}
    epochs, batch_size, generator, device = start_training(model, hp, seed)
    images, tokens = splits.train[0].to(device), splits.train[1].to(device)
    n_train = len(images)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # no weight decay on the temperature, norms, biases and embeddings (as CLIP)
        (no_decay if p.ndim < 2 or "embed" in name or name == "log_scale" else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(hp["lr"]),
        weight_decay=float(hp["weight_decay"]),
    )
    scheduler = warmup_cosine(optimizer, hp, math.ceil(n_train / batch_size))

    metrics: dict[str, float] = {}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        image_emb, text_emb, scale = model(images[idx], tokens[idx])
        return contrastive_loss(image_emb, text_emb, scale, same_rows(tokens[idx]))

    for epoch in range(1, epochs + 1):
        train_loss = train_epoch(
            model, optimizer, scheduler, n_train, batch_size, generator, batch_loss,
            epoch,
        )  # fmt: skip
        metrics = {"train_loss": train_loss, "logit_scale": model.logit_scale().item()}
        metrics |= {
            f"val_{k}": v for k, v in evaluate_contrastive(model, splits.val, device).items()
        }
        if epoch == epochs:
            test = evaluate_contrastive(model, splits.test, device)
            metrics |= {f"test_{k}": v for k, v in test.items()}
        report(epoch, metrics)
    return metrics


# -- the architecture ------------------------------------------------------------------------
class CLIP(Architecture):
    """CLIP (Radford et al. 2021) for small data; params in ``defaults`` (see clip.toml)."""

    name: ClassVar[str] = "clip"
    task: ClassVar[str] = "contrastive"
    modalities: ClassVar[tuple[str, ...]] = ("image-text",)
    default_space: ClassVar[str] = "clip"
    defaults: ClassVar[dict[str, Any]] = {
        "image_tower": "vit",  # or "cnn"
        "image_depth": 2,
        "image_width": 64,
        "image_heads": 4,
        "patch_size": 4,
        "text_depth": 2,
        "text_width": 64,
        "text_heads": 4,
        "text_causal": True,
        "text_pooling": "eos",  # or "mean"
        "mlp_ratio": 2,
        "dropout": 0.0,
        "embed_dim": 64,
        "temperature_init": 0.07,
    }
    metrics: ClassVar[dict[str, str]] = {
        "val_recall_at_1": "maximize",
        "val_recall_at_5": "maximize",
        "val_zeroshot_accuracy": "maximize",
        "val_loss": "minimize",
    }
    param_ranges: ClassVar[dict[str, Range]] = {
        "image_depth": LAYERS,
        "image_width": SIZE,
        "image_heads": LAYERS,
        "patch_size": PATCH,
        "text_depth": LAYERS,
        "text_width": SIZE,
        "text_heads": LAYERS,
        "mlp_ratio": RATIO,
        "dropout": DROPOUT,
        "embed_dim": SIZE,
        "temperature_init": floats(0, 1, open_low=True),
        "image_tower": one_of("vit", "cnn"),
        "text_pooling": one_of("eos", "mean"),
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build CLIP (for ``spec``'s data, when given), or None."""
        if (reason := self.unknown_params(params)) is not None:
            return reason
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if p["image_tower"] == "vit" and p["image_width"] % p["image_heads"]:
            return (
                f"clip: image_width {p['image_width']} is not divisible by image_heads "
                f"{p['image_heads']}"
            )
        if p["text_width"] % p["text_heads"]:
            return (
                f"clip: text_width {p['text_width']} is not divisible by text_heads "
                f"{p['text_heads']}"
            )
        if spec is not None:
            if spec.task != "contrastive" or spec.vocab_size < 1 or spec.text_length < 1:
                return (
                    f"clip: needs contrastive image-text data (images, token ids, labels), got "
                    f"a {spec.task} {spec.modality} dataset; for the shapes dataset keep "
                    "captions = true"
                )
            if len(spec.input_shape) != 3:
                return f"clip: needs images shaped (C, H, W), got input shape {spec.input_shape}"
            _, rows, cols = spec.input_shape
            if p["image_tower"] == "vit" and (rows % p["patch_size"] or cols % p["patch_size"]):
                return (
                    f"clip: patch_size {p['patch_size']} does not divide the image size "
                    f"{rows}x{cols}"
                )
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> CLIPModel:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        embed_dim, mlp_ratio, dropout = (
            int(p["embed_dim"]),
            int(p["mlp_ratio"]),
            float(p["dropout"]),
        )
        image_tower: nn.Module
        if p["image_tower"] == "vit":
            image_tower = VisionTransformer(
                input_shape=spec.input_shape,  # type: ignore[arg-type]
                num_classes=embed_dim,  # its head is the projection
                depth=int(p["image_depth"]),
                width=int(p["image_width"]),
                heads=int(p["image_heads"]),
                mlp_ratio=mlp_ratio,
                patch_size=int(p["patch_size"]),
                dropout=dropout,
            )
        else:
            shape: tuple[int, int, int] = spec.input_shape  # type: ignore[assignment]
            image_tower = ConvTower(shape, int(p["image_width"]), int(p["image_depth"]), embed_dim)
        text_tower = TextTransformer(
            vocab_size=spec.vocab_size,
            text_length=spec.text_length,
            width=int(p["text_width"]),
            depth=int(p["text_depth"]),
            heads=int(p["text_heads"]),
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            embed_dim=embed_dim,
            causal=bool(p["text_causal"]),
            pooling=str(p["text_pooling"]),
        )
        return CLIPModel(image_tower, text_tower, float(p["temperature_init"]))

    def train(
        self,
        model: torch.nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Callable[[int, dict[str, float]], None],
        seed: int,
    ) -> dict[str, float]:
        """Train with ``train_contrastive``."""
        return train_contrastive(model, splits, params, report, seed)  # type: ignore[arg-type]

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """Each tower alone, giving unit embeddings: "image" (images), "text" (token ids)."""
        assert isinstance(model, CLIPModel)
        meta = {"logit_scale": repr(model.logit_scale().item())}
        towers = {"image": (model.image_tower, 0, "image"), "text": (model.text_tower, 1, "tokens")}
        return {
            part: OnnxPart(
                Normalized(tower), (splits.test[i],), (name,), part, "embedding", {}, meta
            )
            for part, (tower, i, name) in towers.items()
        }
