"""A VideoCLIP-style video-text retriever: a frame CNN and a temporal transformer for
video, a text transformer for captions, trained contrastively.

Objective (the trainer here, ``train_video_text``):

- Symmetric InfoNCE between clip and caption embeddings with a learnable temperature
  (CLIP). One caption per video per batch, so every other pair of a batch is a negative.
- Temporally overlapping positives (VideoCLIP, Xu et al. 2021): a caption is paired not
  with exactly its span but with a clip grown around a time sampled inside the span, of
  random length (``clip_min_frames`` to ``clip_max_frames``); the clip always contains
  that time, so clip and caption overlap without being aligned.
- Retrieval-augmented batches (``retrieval_batches = true``, VideoCLIP): from the
  second epoch on, every epoch embeds the training videos, clusters them with k-means
  (one cluster per batch) and builds batches from the members of a cluster, so the
  in-batch negatives are similar videos (hard negatives).
- Masked-modality model (``mmm_weight > 0``, in the style of VLM, Xu et al. 2021): a
  share ``mmm_mask_ratio`` of each caption's word tokens is replaced by a learned mask
  token; each masked token's output must pick out, among every frame of every clip in
  the batch, the frame of its own clip that it is closest to (an NCE over frames).
- Support-set bottleneck (``support_set_weight > 0``, Patrick et al. 2021): each
  caption is decoded from a cross-attention-weighted combination of the *other* clips'
  embeddings of the batch (the query is its own clip), so that similar videos must
  share the semantics of their captions.

Data: the ``video_text`` layout of ``autoplat.plugins.datasets.video``. Evaluation is
text-to-video retrieval: every caption of the split ranks all the split's (whole)
videos; recall@k and the median rank of its own video are reported.

The model's ``video_tower`` (frames [B, T, C, H, W] -> unit embeddings [B, E]) and
``text_tower`` (token ids [B, L] -> unit embeddings [B, E]) are separate modules that
each export to ONNX alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import (
    LAYERS,
    NON_NEGATIVE,
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
from autoplat.core.training import TRAINER_PARAMS as BASE
from autoplat.core.training import (
    TrialFailed,
    autocast,
    check_finite,
    start_training,
    warmup_cosine,
)
from autoplat.plugins.layers import BLOCK_RANGES, Block, heads_problem

PAD_ID, BOS_ID, EOS_ID = 0, 2, 3  # as autoplat.plugins.datasets.captions
EVAL_BATCH_SIZE = 256
MMM_TEMPERATURE = 0.1
MAX_LOGIT_SCALE = 100.0


# -- modules ---------------------------------------------------------------------------
def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean(dim=1)
    weight = mask.to(x.dtype).unsqueeze(-1)
    return (x * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)


class FrameEncoder(nn.Module):
    """Stride-2 convolutions down to at most 4x4, flattened (so position survives) to ``width``.

    Its input is a frame and its difference from the frame before (2C channels), so that
    motion shows in a single frame's features.
    """

    def __init__(self, input_shape: tuple[int, int, int], channels: int, width: int) -> None:
        super().__init__()
        c, h, w = input_shape
        c *= 2
        layers: list[nn.Module] = []
        out = channels
        while min(h, w) > 4:
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.GELU()]
            c, h, w = out, (h + 1) // 2, (w + 1) // 2
            out = min(out * 2, channels * 4)
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c * h * w, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, width]."""
        return self.norm(self.proj(self.convs(frames).flatten(1)))


class VideoTower(nn.Module):
    """Per-frame CNN, temporal transformer over (a clip of) the frames, mean pool, projection."""

    def __init__(
        self,
        input_shape: tuple[int, int, int, int],
        frame_channels: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: int,
        dropout: float,
        embed_dim: int,
    ) -> None:
        super().__init__()
        frames = input_shape[0]
        self.frame_encoder = FrameEncoder(input_shape[1:], frame_channels, width)
        self.pos_embed = nn.Parameter(torch.randn(1, frames, width) * width**-0.5)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def sequence(
        self, frames: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame outputs [B, T, width] and the unit clip embedding [B, E].

        ``mask`` [B, T] (True: in the clip) restricts attention and pooling to a clip.
        """
        b, t = frames.shape[:2]
        before = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        x = torch.cat([frames, frames - before], dim=2)
        x = self.frame_encoder(x.flatten(0, 1)).reshape(b, t, -1)
        x = x + self.pos_embed[:, :t]
        keys = None if mask is None else mask[:, None, None, :]  # attend to the clip only
        for block in self.blocks:
            x = block(x, keys)
        x = self.norm(x)
        return x, F.normalize(self.proj(_masked_mean(x, mask)), dim=-1)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit embeddings [B, E] of videos [B, T, C, H, W] (or of their clips in ``mask``)."""
        return self.sequence(frames, mask)[1]


class TextTower(nn.Module):
    """Token and position embeddings, a transformer over non-pad tokens, mean pool, projection."""

    def __init__(
        self,
        vocab_size: int,
        length: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: int,
        dropout: float,
        embed_dim: int,
    ) -> None:
        super().__init__()
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(1, length, width) * width**-0.5)
        self.mask_token = nn.Parameter(torch.zeros(width))  # masked-modality model input
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def sequence(
        self, tokens: torch.Tensor, masked: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token outputs [B, L, width] and the unit caption embedding [B, E].

        ``masked`` [B, L] (True: hide that token) replaces tokens by the mask token.
        """
        keep = tokens != PAD_ID
        x = self.token_embed(tokens)
        if masked is not None:
            x = torch.where(masked.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + self.pos_embed[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x, keep[:, None, None, :])
        x = self.norm(x)
        return x, F.normalize(self.proj(_masked_mean(x, keep)), dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit embeddings [B, E] of token ids [B, L] (pad id 0)."""
        return self.sequence(tokens)[1]


class SupportSet(nn.Module):
    """Decodes each caption from an attention-weighted mix of the *other* clips' embeddings."""

    def __init__(self, embed_dim: int, vocab_size: int, length: int) -> None:
        super().__init__()
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.pos_embed = nn.Parameter(torch.randn(length, embed_dim) * embed_dim**-0.5)
        self.decoder = nn.Sequential(
            nn.LayerNorm(embed_dim),
            nn.Linear(embed_dim, embed_dim),
            nn.GELU(),
            nn.Linear(embed_dim, vocab_size),
        )

    def forward(self, video: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of decoding ``tokens`` [B, L] from the other rows of ``video``."""
        b = len(video)
        if b < 2:
            return video.sum() * 0.0
        scores = self.query(video) @ self.key(video).T / math.sqrt(video.shape[-1])
        own = torch.eye(b, dtype=torch.bool, device=video.device)
        weights = scores.masked_fill(own, float("-inf")).softmax(dim=-1)
        mixed = weights @ self.value(video)  # [B, E], from the other clips only
        logits = self.decoder(mixed[:, None, :] + self.pos_embed[None, : tokens.shape[1]])
        targets = tokens.masked_fill(tokens == PAD_ID, -100)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)


class VideoTextModel(nn.Module):
    """The two towers, the learnable temperature and the heads of the auxiliary losses."""

    def __init__(self, spec: DataSpec, p: dict[str, Any]) -> None:
        super().__init__()
        width, heads, ratio = int(p["width"]), int(p["heads"]), int(p["mlp_ratio"])
        dropout, embed_dim = float(p["dropout"]), int(p["embed_dim"])
        self.video_tower = VideoTower(
            spec.input_shape,
            int(p["frame_channels"]),
            width,
            int(p["temporal_depth"]),
            heads,
            ratio,
            dropout,
            embed_dim,
        )
        self.text_tower = TextTower(
            spec.vocab_size,
            spec.text_length,
            width,
            int(p["text_depth"]),
            heads,
            ratio,
            dropout,
            embed_dim,
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.mmm_text = nn.Linear(width, embed_dim)  # masked token -> frame space
        self.mmm_frame = nn.Linear(width, embed_dim)
        self.support_set = SupportSet(embed_dim, spec.vocab_size, spec.text_length)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.video_tower(frames, mask)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_tower(tokens)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Similarity logits [B_text, B_video] of captions ``tokens`` to videos ``frames``."""
        return self.scale() * self.encode_text(tokens) @ self.encode_video(frames).T


# -- losses ----------------------------------------------------------------------------
def contrastive_loss(text: torch.Tensor, video: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of matching rows of unit ``text`` and ``video`` [B, E]."""
    logits = scale * text.float() @ video.float().T
    target = torch.arange(len(text), device=text.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def mask_tokens(tokens: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """bool [B, L]: about ``ratio`` of each caption's word tokens, at least one where any."""
    words = (tokens != PAD_ID) & (tokens != BOS_ID) & (tokens != EOS_ID)
    score = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    chosen = (score < ratio) & words
    score = score.masked_fill(~words, -1.0)
    best = score == score.max(dim=1, keepdim=True).values
    none = ~chosen.any(dim=1, keepdim=True)
    return chosen | (none & best & words)


def mmm_loss(
    model: VideoTextModel,
    tokens: torch.Tensor,
    frames_out: torch.Tensor,
    clip_mask: torch.Tensor,
    generator: torch.Generator,
    ratio: float,
) -> torch.Tensor:
    """Masked-modality loss: each masked token finds its closest frame of its own clip.

    Args:
        model: The model (its text tower and MMM heads).
        tokens: The batch's captions [B, L].
        frames_out: The video tower's per-frame outputs [B, T, width] for the clips.
        clip_mask: [B, T] True for the clip's frames.
        generator: Picks the masked tokens.
        ratio: Share of word tokens masked.
    """
    masked = mask_tokens(tokens, ratio, generator)
    if not masked.any():
        return frames_out.sum() * 0.0
    text_out, _ = model.text_tower.sequence(tokens, masked)
    pred = F.normalize(model.mmm_text(text_out[masked]).float(), dim=-1)  # [K, E]
    frames = F.normalize(model.mmm_frame(frames_out[clip_mask]).float(), dim=-1)  # [F, E]
    b, t = clip_mask.shape
    frame_owner = torch.arange(b, device=tokens.device)[:, None].expand(b, t)[clip_mask]
    token_owner = torch.arange(b, device=tokens.device)[:, None].expand_as(masked)[masked]
    logits = pred @ frames.T / MMM_TEMPERATURE
    own = token_owner[:, None] == frame_owner[None, :]
    target = logits.detach().masked_fill(~own, float("-inf")).argmax(dim=1)
    return F.cross_entropy(logits, target)


def batch_losses(
    model: VideoTextModel,
    frames: torch.Tensor,
    tokens: torch.Tensor,
    clip_mask: torch.Tensor,
    hp: dict[str, Any],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The losses of one batch: ``loss`` (the weighted total), ``contrastive``, and
    ``mmm`` / ``support_set`` where their weight is above zero.

    Args:
        model: The model.
        frames: Videos [B, T, C, H, W].
        tokens: One caption per video [B, L].
        clip_mask: [B, T] the clip of each video paired with its caption.
        hp: Trainer params (mmm_weight, mmm_mask_ratio, support_set_weight).
        generator: Picks the masked tokens of the MMM loss.
    """
    frames_out, video = model.video_tower.sequence(frames, clip_mask)
    text = model.text_tower(tokens)
    losses = {"contrastive": contrastive_loss(text, video, model.scale())}
    total = losses["contrastive"]
    if float(hp["mmm_weight"]) > 0:
        losses["mmm"] = mmm_loss(
            model, tokens, frames_out, clip_mask, generator, float(hp["mmm_mask_ratio"])
        )
        total = total + float(hp["mmm_weight"]) * losses["mmm"]
    if float(hp["support_set_weight"]) > 0:
        losses["support_set"] = model.support_set(video, tokens)
        total = total + float(hp["support_set_weight"]) * losses["support_set"]
    losses["loss"] = total
    return losses


# -- sampling --------------------------------------------------------------------------
def sample_captions(caption_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One real caption index per video of ``caption_mask`` [B, M], uniformly at random."""
    score = torch.rand(caption_mask.shape, generator=generator).masked_fill(~caption_mask, -1.0)
    return score.argmax(dim=1)


def sample_clips(
    spans: torch.Tensor,
    num_frames: int,
    min_frames: int,
    max_frames: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips overlapping each caption span (VideoCLIP): (start, end) frame indices [B].

    A time is drawn uniformly inside the span (start, end) in frames; the clip, of a
    length drawn uniformly from [min_frames, max_frames] (at most ``num_frames``), is
    centred on the frame holding that time and shifted inside the video where needed.
    It always contains that frame, so it overlaps the span.
    """
    b = len(spans)
    start, end = spans[:, 0].float(), spans[:, 1].float()
    when = start + torch.rand(b, generator=generator) * (end - start).clamp_min(0)
    frame = when.floor().long().clamp(0, num_frames - 1)
    hi = min(max_frames, num_frames)
    lo = min(min_frames, hi)
    length = torch.randint(lo, hi + 1, (b,), generator=generator)
    first = (frame - length // 2).clamp(min=0)
    first = torch.minimum(first, num_frames - length)
    return first, first + length


def clip_masks(first: torch.Tensor, last: torch.Tensor, num_frames: int) -> torch.Tensor:
    """bool [B, T]: True for frames in [first, last)."""
    t = torch.arange(num_frames)
    return (t[None] >= first[:, None]) & (t[None] < last[:, None])


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 20) -> torch.Tensor:
    """Cluster labels [N] of rows of ``x`` by Lloyd's k-means (k-means++ seeding)."""
    n = len(x)
    k = max(1, min(k, n))
    x = x.float()
    centers = [x[int(torch.randint(n, (1,), generator=generator))]]
    closest = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        weights = closest.clamp_min(0).cpu()
        if weights.sum() <= 0:
            weights = torch.ones(n)
        i = int(torch.multinomial(weights, 1, generator=generator))
        centers.append(x[i])
        closest = torch.minimum(closest, ((x - x[i]) ** 2).sum(1))
    c = torch.stack(centers)
    labels = torch.cdist(x, c).argmin(1)
    for _ in range(iters):
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)[:, None]
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
        new = torch.cdist(x, c).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def retrieval_batches(
    embeddings: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Batches of neighbouring videos: k-means into ceil(N / batch_size) clusters, the
    clusters in random order, each cluster's members shuffled, cut into batches."""
    n = len(embeddings)
    labels = kmeans(
        F.normalize(embeddings.float(), dim=-1).cpu(), math.ceil(n / batch_size), generator
    )
    order = []
    for cluster in torch.randperm(int(labels.max()) + 1, generator=generator).tolist():
        members = (labels == cluster).nonzero().flatten()
        order.append(members[torch.randperm(len(members), generator=generator)])
    return _chunks(torch.cat(order), batch_size)


def _chunks(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches; a last batch of one joins the one before (InfoNCE needs 2)."""
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


# -- evaluation ------------------------------------------------------------------------
@torch.inference_mode()
def embed_videos(model: VideoTextModel, videos: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Unit embeddings [N, E] (float, on ``device``) of whole videos."""
    model.eval()
    out = []
    for start in range(0, len(videos), EVAL_BATCH_SIZE):
        with autocast(device):
            out.append(model.encode_video(videos[start : start + EVAL_BATCH_SIZE].to(device)))
    return torch.cat(out).float()


@torch.inference_mode()
def evaluate(
    model: VideoTextModel, split: tuple[torch.Tensor, ...], device: torch.device
) -> dict[str, float]:
    """Text-to-video retrieval over a split: every real caption ranks every video.

    Returns recall_at_1/5/10 (share of captions whose video ranks in the top k),
    median_rank (1 = first) and loss: the mean of the caption-to-video cross-entropy and
    the video-to-captions multiple-positive NCE (MIL-NCE), at the model's temperature.
    """
    videos, tokens, _, caption_mask = split
    video = embed_videos(model, videos, device)
    owner = caption_mask.nonzero()[:, 0].to(device)
    flat = tokens[caption_mask]
    text = []
    for start in range(0, len(flat), EVAL_BATCH_SIZE):
        with autocast(device):
            text.append(model.encode_text(flat[start : start + EVAL_BATCH_SIZE].to(device)))
    logits = model.scale().float() * torch.cat(text).float() @ video.T  # [K, N]
    own = logits.gather(1, owner[:, None])
    rank = (logits > own).sum(dim=1) + 1
    positive = owner[None, :] == torch.arange(len(video), device=device)[:, None]  # [N, K]
    v2t = logits.T
    mil_nce = (v2t.logsumexp(1) - v2t.masked_fill(~positive, float("-inf")).logsumexp(1)).mean()
    t2v = F.cross_entropy(logits, owner)
    return {
        "recall_at_1": (rank <= 1).float().mean().item(),
        "recall_at_5": (rank <= 5).float().mean().item(),
        "recall_at_10": (rank <= 10).float().mean().item(),
        "median_rank": _median(rank),
        "loss": ((t2v + mil_nce) / 2).item(),
    }


def _median(values: torch.Tensor) -> float:
    """The median (the mean of the middle two of an even count)."""
    ordered = values.float().sort().values
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid].item()
    return ((ordered[mid - 1] + ordered[mid]) / 2).item()


# -- trainer ---------------------------------------------------------------------------
TRAINER_PARAMS: dict[str, Any] = {
    "clip_min_frames": 4,
    "clip_max_frames": 16,
    "retrieval_batches": False,
    "mmm_weight": 0.0,
    "mmm_mask_ratio": 0.3,
    "support_set_weight": 0.0,
}
"""The video-text trainer's params beyond ``training.TRAINER_PARAMS``, with defaults."""


def _check_hp(hp: dict[str, Any]) -> str | None:
    if int(hp["epochs"]) < 1 or int(hp["batch_size"]) < 2:
        return f"epochs must be >= 1 and batch_size >= 2, got {hp['epochs']} and {hp['batch_size']}"
    if not 1 <= int(hp["clip_min_frames"]) <= int(hp["clip_max_frames"]):
        return (
            "need 1 <= clip_min_frames <= clip_max_frames, got "
            f"{hp['clip_min_frames']} and {hp['clip_max_frames']}"
        )
    if float(hp["mmm_weight"]) < 0 or float(hp["support_set_weight"]) < 0:
        return "mmm_weight and support_set_weight must be >= 0"
    if not 0 < float(hp["mmm_mask_ratio"]) <= 1:
        return f"mmm_mask_ratio must be in (0, 1], got {hp['mmm_mask_ratio']}"
    return None


def train_video_text(
    model: VideoTextModel,
    splits: Splits,
    params: dict[str, Any],
    report: Callable[[int, dict[str, float]], None],
    seed: int,
) -> dict[str, float]:
    """Train contrastively with AdamW and a cosine schedule, reporting after every epoch.

    Args:
        model: A ``VideoTextModel``.
        splits: The ``video_text`` layout (videos, tokens, spans, caption_mask) per split.
        params: Trainer params: ``training.TRAINER_PARAMS`` and ``TRAINER_PARAMS`` here.
        report: Called as ``report(epoch, metrics)`` after each epoch with train_loss
            (the weighted total), train_contrastive_loss (and train_mmm_loss /
            train_support_set_loss when enabled), val_recall_at_1/5/10,
            val_median_rank and val_loss; the last call adds the test_* of the same.
        seed: Seeds torch (dropout), the batch order, captions, clips and masks.

    Returns:
        The metrics of the last report.

    Raises:
        TrialFailed: The loss became NaN or infinite, or the params are out of range.
    """

    defaults = {**BASE, **TRAINER_PARAMS}
    hp = {key: params.get(key, default) for key, default in defaults.items()}
    reason = _check_hp(hp)
    if reason is not None:
        raise TrialFailed(f"video-text: {reason}")
    epochs, batch_size, generator, device = start_training(model, hp, seed)

    videos, tokens, spans, caption_mask = splits.train
    videos = videos.to(device)
    n, num_frames = len(videos), videos.shape[1]
    if n < 2:
        raise TrialFailed(f"video-text: needs at least 2 training videos, got {n}")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"])
    )
    scheduler = warmup_cosine(optimizer, hp, len(_chunks(torch.arange(n), batch_size)))

    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        if hp["retrieval_batches"] and epoch > 1:
            batches = retrieval_batches(embed_videos(model, videos, device), batch_size, generator)
        else:
            batches = _chunks(torch.randperm(n, generator=generator), batch_size)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        for idx in batches:
            caption = sample_captions(caption_mask[idx], generator)
            span = spans[idx, caption]
            first, last = sample_clips(
                span,
                num_frames,
                int(hp["clip_min_frames"]),
                int(hp["clip_max_frames"]),
                generator,
            )
            mask = clip_masks(first, last, num_frames).to(device)
            batch_tokens = tokens[idx, caption].to(device)
            with autocast(device):
                losses = batch_losses(
                    model, videos[idx.to(device)], batch_tokens, mask, hp, generator
                )
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            scheduler.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0) + value.detach().float() * len(idx)
        train = {key: value.item() / n for key, value in sums.items()}
        check_finite(train["loss"], epoch)
        metrics = {"train_loss": train.pop("loss")}
        metrics |= {f"train_{key}_loss": value for key, value in train.items()}
        val = evaluate(model, splits.val, device)
        metrics |= {f"val_{key}": value for key, value in val.items()}
        if epoch == epochs:
            test = evaluate(model, splits.test, device)
            metrics |= {f"test_{key}": value for key, value in test.items()}
        report(epoch, metrics)
    return metrics


# -- the architecture ------------------------------------------------------------------
class VideoText(Architecture):
    """VideoCLIP-style retriever; params: width, heads, mlp_ratio, temporal_depth,
    text_depth, embed_dim, frame_channels, dropout (trainer params: ``TRAINER_PARAMS``)."""

    name: ClassVar[str] = "video-text"
    task: ClassVar[str] = "video_text"
    modalities: ClassVar[tuple[str, ...]] = ("video-text",)
    default_space: ClassVar[str] = "video-text"
    defaults: ClassVar[dict[str, Any]] = {
        "width": 64,
        "heads": 4,
        "mlp_ratio": 2,
        "temporal_depth": 1,
        "text_depth": 1,
        "embed_dim": 64,
        "frame_channels": 16,
        "dropout": 0.0,
    }
    trainer_params: ClassVar[dict[str, Any]] = TRAINER_PARAMS
    metrics: ClassVar[dict[str, str]] = {
        "val_recall_at_1": "maximize",
        "val_recall_at_5": "maximize",
        "val_recall_at_10": "maximize",
        "val_median_rank": "minimize",
        "val_loss": "minimize",
    }
    param_ranges: ClassVar[dict[str, Range]] = {
        **BLOCK_RANGES,
        "temporal_depth": LAYERS,
        "text_depth": LAYERS,
        "embed_dim": SIZE,
        "frame_channels": SIZE,
        "batch_size": replace(TRAINER_RANGES["batch_size"], low=2),
        "clip_min_frames": ints(1, 1024),
        "clip_max_frames": ints(1, 1024),
        "mmm_weight": NON_NEGATIVE,
        "mmm_mask_ratio": floats(0, 1, open_low=True),
        "support_set_weight": NON_NEGATIVE,
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build the model (for ``spec``'s data, when given), or None."""
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if (reason := heads_problem("video-text", p["width"], p["heads"])) is not None:
            return reason
        if spec is not None:
            if len(spec.input_shape) != 4:
                return (
                    "video-text: needs videos shaped (T, C, H, W), got input shape "
                    f"{spec.input_shape}"
                )
            if spec.vocab_size < 4 or spec.text_length < 3:
                return "video-text: the data must give vocab_size >= 4 and text_length >= 3"
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> VideoTextModel:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        return VideoTextModel(spec, self.resolve_params(params, spec))

    def train(
        self,
        model: nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Callable[[int, dict[str, float]], None],
        seed: int,
    ) -> dict[str, float]:
        """Train with ``train_video_text``."""
        return train_video_text(model, splits, params, report, seed)

    def onnx_parts(self, model: nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """Each tower alone, giving unit embeddings: "video" (whole videos [T, C, H, W])
        and "text" (token ids of the test split's real captions)."""
        assert isinstance(model, VideoTextModel)
        videos, tokens, _, caption_mask = splits.test
        meta = {"logit_scale": repr(model.scale().item())}
        return {
            "video": OnnxPart(
                model.video_tower, (videos,), ("video",), "video", "embedding", {}, meta
            ),
            "text": OnnxPart(
                model.text_tower,
                (tokens[caption_mask],),
                ("tokens",),
                "text",
                "embedding",
                {},
                meta,
            ),
        }
