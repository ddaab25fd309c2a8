"""A multilayer perceptron for image classification."""

from __future__ import annotations

from typing import Any, ClassVar

from autoplat.core.interfaces import Architecture, DataSpec
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class MLP(Architecture):
    """Flattened pixels through ``depth`` hidden layers; params: depth, width, activation,
    dropout."""

    name: ClassVar[str] = "example-mlp"
    task: ClassVar[str] = "classification"
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    default_space: ClassVar[str] = "example-mlp"
    defaults: ClassVar[dict[str, Any]] = {
        "depth": 2,
        "width": 64,
        "activation": "relu",
        "dropout": 0.0,
    }

    def check_params(self, params: dict[str, Any]) -> str | None:
        """Why these params cannot build an MLP, or None."""
        p = {**self.defaults, **params}
        if p["depth"] < 0 or p["width"] < 1:
            got = f"{p['depth']}, {p['width']}"
            return f"example-mlp: needs depth >= 0 and width >= 1, got {got}"
        if p["activation"] not in ACTIVATIONS:
            return f"example-mlp: activation must be one of {sorted(ACTIVATIONS)}"
        if not 0 <= p["dropout"] < 1:
            return f"example-mlp: dropout must be in [0, 1), got {p['dropout']}"
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> nn.Module:
        """Build the model; missing params take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        reason = self.check_params(params)
        if reason is not None:
            raise ValueError(reason)
        p = {**self.defaults, **params}
        size = 1
        for dim in spec.input_shape:
            size *= dim
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(int(p["depth"])):
            layers += [nn.Linear(size, int(p["width"])), ACTIVATIONS[p["activation"]]()]
            layers.append(nn.Dropout(float(p["dropout"])))
            size = int(p["width"])
        layers.append(nn.Linear(size, spec.num_classes))
        return nn.Sequential(*layers)
