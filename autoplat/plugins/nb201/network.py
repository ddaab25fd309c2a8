"""The NAS-Bench-201 cell and network in torch, so real training searches the table's space.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search" (ICLR 2020). A cell has 4 nodes: node 0 is the cell's input and node ``i`` is the
sum over ``j < i`` of ``op_{i,j}(node j)``; the cell's output is node 3. Each of the 6
edges (``edge_I_J``, from node J to node I, as in ``search_spaces/nb201.toml``) takes one
of 5 ops, so there are 5**6 = 15,625 cells. The network is the paper's: a conv stem,
``cells_per_stage`` cells per stage and a residual block of stride 2 between stages, then
BN-ReLU, global average pooling and a linear head. Images as small as 8x8 get 2 stages.
The benchmark trains ``cells_per_stage = 5`` with ``channels = 16`` (15 cells on 32x32
images); the default here is 1 cell per stage, which trains about 5x faster on a CPU.
``cost`` counts a network's parameters and FLOPs as the benchmark reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autoplat.plugins.nb201.cell import EDGES, OPS

MAX_REDUCTIONS = 2  # the paper's 3 stages
MIN_STAGE_SIZE = 4  # a reduction must leave feature maps at least 4x4


class Zero(nn.Module):
    """The "none" op: zeros shaped like its input (kept in the graph, as in the paper)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU, a ``kernel x kernel`` conv (padded to keep the size) and batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


def make_op(op: str, channels: int) -> nn.Module:
    """One edge's op on ``channels`` channels, keeping the spatial size."""
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"nb201: unknown op {op!r}, expected one of {OPS}")


class NB201Cell(nn.Module):
    """A NAS-Bench-201 cell; ``ops`` maps each edge name of ``EDGES`` to its op."""

    def __init__(self, ops: dict[str, str], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({edge: make_op(ops[edge], channels) for edge in EDGES})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            out = self.edges[f"edge_{node}_0"](x)
            for src in range(1, node):
                out = out + self.edges[f"edge_{node}_{src}"](nodes[src])
            nodes.append(out)
        return nodes[3]


class ResidualReduction(nn.Module):
    """The paper's residual block between stages: halves the size, changes the channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def num_reductions(rows: int, cols: int) -> int:
    """How many stride-2 reductions images of ``rows x cols`` get (at most 2)."""
    size, count = min(rows, cols), 0
    while count < MAX_REDUCTIONS and size // 2 >= MIN_STAGE_SIZE:
        size, count = size // 2, count + 1
    return count


def build_stages(
    input_shape: tuple[int, ...],
    channels: int,
    cells_per_stage: int,
    make_cell: Callable[[int], nn.Module],
) -> tuple[nn.Module, list[nn.Module], int]:
    """The conv stem, the cells of every stage joined by reductions, and the last width.

    ``make_cell(width)`` builds one cell; the supernet passes its weight-sharing cell.
    """
    c_in, rows, cols = input_shape
    stem = nn.Sequential(
        nn.Conv2d(c_in, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
    )
    layers: list[nn.Module] = []
    width = channels
    for stage in range(num_reductions(rows, cols) + 1):
        if stage:
            layers.append(ResidualReduction(width, 2 * width))
            width *= 2
        layers.extend(make_cell(width) for _ in range(cells_per_stage))
    return stem, layers, width


class NB201Net(nn.Module):
    """Stem, stages of ``cells_per_stage`` cells joined by reductions, pooling and a head."""

    def __init__(
        self,
        ops: dict[str, str],
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: int,
        cells_per_stage: int,
    ) -> None:
        super().__init__()
        self.stem, layers, width = build_stages(
            input_shape, channels, cells_per_stage, lambda w: NB201Cell(ops, w)
        )
        self.cells = nn.Sequential(*layers)
        self.last_act = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_act(self.cells(self.stem(x)))
        return self.head(self.pool(x).flatten(1))


def cost(net: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``net``'s parameter count and FLOPs on one input of ``input_shape``.

    FLOPs count the multiply-adds of convolutions and linear layers (plus their biases),
    as NAS-Bench-201 does; pooling, BatchNorm and additions are not counted.
    """
    flops = 0

    def count(module: nn.Module, _: Any, out: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            flops += out[0].numel() * (k // module.groups + (module.bias is not None))
        elif isinstance(module, nn.Linear):
            flops += out[0].numel() * (module.in_features + (module.bias is not None))

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return sum(p.numel() for p in net.parameters()), flops
