"""A small Vision Transformer for image classification."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.hookspecs import Register, hookimpl
from autoplat.core.interfaces import (
    DROPOUT,
    LAYERS,
    PATCH,
    RATIO,
    SIZE,
    Architecture,
    DataSpec,
    Range,
)


class Attention(nn.Module):
    """Multi-head self-attention on ``scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """A pre-norm transformer block: attention and an MLP, each with a residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * mlp_ratio),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width * mlp_ratio, width),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch embedding, cls token, transformer blocks and a linear head on the cls token."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: int,
        patch_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        channels, rows, cols = input_shape
        num_patches = (rows // patch_size) * (cols // patch_size)
        self.patch_embed = nn.Conv2d(channels, width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, width))
        # Position embeddings as big_vision initialises them (std 1/sqrt(width)): the
        # usual 0.02 leaves small images' many blank patches indistinguishable for epochs.
        nn.init.normal_(self.pos_embed, std=width**-0.5)
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class ViT(Architecture):
    """Vision Transformer; params: depth, width, heads, mlp_ratio, patch_size, dropout."""

    name: ClassVar[str] = "vit"
    task: ClassVar[str] = "classification"
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    default_space: ClassVar[str] = "vit"
    defaults: ClassVar[dict[str, Any]] = {
        "depth": 2,
        "width": 64,
        "heads": 4,
        "mlp_ratio": 2,
        "patch_size": 2,
        "dropout": 0.1,
    }
    param_ranges: ClassVar[dict[str, Range]] = {
        "depth": LAYERS,
        "width": SIZE,
        "heads": LAYERS,
        "mlp_ratio": RATIO,
        "patch_size": PATCH,
        "dropout": DROPOUT,
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build a ViT (for images of ``spec``, when given), or None."""
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if p["width"] % p["heads"]:
            return f"vit: width {p['width']} is not divisible by heads {p['heads']}"
        if spec is not None:
            if len(spec.input_shape) != 3:
                return f"vit: needs images shaped (C, H, W), got input shape {spec.input_shape}"
            _, rows, cols = spec.input_shape
            if rows % p["patch_size"] or cols % p["patch_size"]:
                return (
                    f"vit: patch_size {p['patch_size']} does not divide the image size "
                    f"{rows}x{cols}"
                )
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> nn.Module:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        return VisionTransformer(
            input_shape=spec.input_shape,
            num_classes=spec.num_classes,
            depth=int(p["depth"]),
            width=int(p["width"]),
            heads=int(p["heads"]),
            mlp_ratio=int(p["mlp_ratio"]),
            patch_size=int(p["patch_size"]),
            dropout=float(p["dropout"]),
        )


@hookimpl
def register_architectures(register: Register) -> None:
    """Register the ViT."""
    register(ViT())
