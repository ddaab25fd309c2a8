"""A small Vision Transformer for image classification."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from autoplat.core.interfaces import (
    LAYERS,
    PATCH,
    Architecture,
    DataSpec,
    Range,
)
from autoplat.plugins.layers import BLOCK_RANGES, VisionTransformer, heads_problem


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
        **BLOCK_RANGES,
        "depth": LAYERS,
        "patch_size": PATCH,
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build a ViT (for images of ``spec``, when given), or None."""
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if (reason := heads_problem("vit", p["width"], p["heads"])) is not None:
            return reason
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
