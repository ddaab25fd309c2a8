"""Layers several architectures share: attention, transformer blocks, the ViT backbone,
patch tokens, fixed sin-cos positions and a small conv tower; and the ranges and checks
of the blocks' params."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import DROPOUT, LAYERS, RATIO, SIZE, Range

BLOCK_RANGES: dict[str, Range] = {
    "width": SIZE,
    "heads": LAYERS,
    "mlp_ratio": RATIO,
    "dropout": DROPOUT,
}
"""The values ``Block``'s params may take (an architecture's ``param_ranges``)."""


def heads_problem(name: str, width: int, heads: int) -> str | None:
    """Why ``width`` cannot be split over ``heads`` attention heads ("<name>: ..."), or None."""
    return f"{name}: width {width} is not divisible by heads {heads}" if width % heads else None


class Attention(nn.Module):
    """Multi-head self-attention on ``scaled_dot_product_attention``.

    ``mask`` (optional) is the attention's boolean ``attn_mask`` (True: may attend),
    broadcast to (B, heads, N, N), e.g. (B, 1, 1, N) to ignore some keys.
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """A pre-norm transformer block: attention (``mask`` as ``Attention``'s) and an MLP,
    each with a residual."""

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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
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


class PatchTokens(nn.Module):
    """An image-like (batch, C, H, W) -> patch tokens with learned positions (batch, N, width).

    Patches are ``patch_size`` squared, ``stride`` apart (default: ``patch_size``, no
    overlap; a smaller stride overlaps them, as AST does).
    """

    def __init__(
        self,
        channels: int,
        rows: int,
        cols: int,
        patch_size: int,
        width: int,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        stride = stride or patch_size
        self.embed = nn.Conv2d(channels, width, kernel_size=patch_size, stride=stride)
        self.grid = ((rows - patch_size) // stride + 1, (cols - patch_size) // stride + 1)
        self.num_patches = self.grid[0] * self.grid[1]
        self.pos = nn.Parameter(torch.randn(1, self.num_patches, width) * width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x).flatten(2).transpose(1, 2) + self.pos


def sincos_positions(width: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings (rows * cols, width), row-major, as MAE's and
    DiT's ``get_2d_sincos_pos_embed``: the first half of the channels encodes the column,
    the second half the row, each as ``[sin(p * w_k), cos(p * w_k)]`` with
    ``w_k = 10000 ** (-k / (width / 4))``. ``width`` must be a multiple of 4."""
    if width % 4:
        raise ValueError(f"sin-cos positions need a width divisible by 4, got {width}")
    omega = 10000.0 ** (-torch.arange(width // 4, dtype=torch.float64) / (width / 4))
    row, col = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")

    def embed(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed(col), embed(row)], dim=1).float()


class ConvTower(nn.Module):
    """A small CNN: ``depth`` stages of conv3x3-BN-ReLU (+ 2x2 max-pool while the map is
    larger than 4x4), global average pooling and a linear projection to ``embed_dim``."""

    def __init__(self, input_shape: tuple[int, int, int], width: int, depth: int, embed_dim: int):
        super().__init__()
        channels, rows, _ = input_shape
        layers: list[nn.Module] = []
        for i in range(depth):
            out = width * 2 ** min(i, 2)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)]
            layers.append(nn.ReLU(inplace=True))
            if rows > 4:
                layers.append(nn.MaxPool2d(2))
                rows //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))
