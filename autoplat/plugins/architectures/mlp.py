"""A multilayer perceptron for tabular features or flattened images."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from autoplat.core.interfaces import DROPOUT, LAYERS, SIZE, Architecture, DataSpec, Range, one_of

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


class MLPNet(nn.Module):
    """Flatten, ``depth`` x (Linear, activation, Dropout), then the linear ``head``.

    ``head`` is the last layer, so its input is the penultimate embedding (active
    learning hooks it); the dropout after every hidden layer serves MC-dropout.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int,
        depth: int,
        dropout: float,
        activation: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MLP(Architecture):
    """Multilayer perceptron; params: hidden (width), depth, dropout, activation."""

    name: ClassVar[str] = "mlp"
    task: ClassVar[str] = "classification"
    modalities: ClassVar[tuple[str, ...]] = ("tabular", "image")
    default_space: ClassVar[str] = "mlp"
    defaults: ClassVar[dict[str, Any]] = {
        "hidden": 128,
        "depth": 2,
        "dropout": 0.1,
        "activation": "gelu",
    }
    param_ranges: ClassVar[dict[str, Range]] = {
        "hidden": SIZE,
        "depth": LAYERS,
        "dropout": DROPOUT,
        "activation": one_of(*sorted(ACTIVATIONS)),
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build an MLP, or None (any input shape is flattened)."""
        return self.range_problem({**self.defaults, **params})

    def build(self, params: dict[str, Any], spec: DataSpec) -> nn.Module:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        return MLPNet(
            in_features=math.prod(spec.input_shape),
            num_classes=spec.num_classes,
            hidden=int(p["hidden"]),
            depth=int(p["depth"]),
            dropout=float(p["dropout"]),
            activation=p["activation"],
        )
