"""A weight-sharing NAS-Bench-201 supernet built from the network's own blocks.

Every edge of every cell holds one module per candidate op (``make_op``), so running a
single path computes exactly what an ``NB201Net`` of that cell computes with the same
weights, and ``copy_path`` copies those weights into a standalone ``NB201Net``. The same
supernet also runs the DARTS mixture: each edge's output is the weighted sum of its ops'
outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from autoplat.core.interfaces import DataSpec
from autoplat.plugins.nb201.cell import EDGES
from autoplat.plugins.nb201.network import NB201Cell, NB201Net, build_stages, make_op

Choice = str | torch.Tensor
"""One edge's choice: an op name (a single path) or weights over its candidates (a mixture)."""


class MixedEdge(nn.Module):
    """One edge with a module per candidate op; runs one op or a weighted sum of all."""

    def __init__(self, candidates: Sequence[str], channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({op: make_op(op, channels) for op in candidates})

    def forward(self, x: torch.Tensor, choice: Choice) -> torch.Tensor:
        if isinstance(choice, str):
            return self.ops[choice](x)
        return sum(w * op(x) for w, op in zip(choice, self.ops.values(), strict=True))


class SuperCell(nn.Module):
    """An ``NB201Cell`` whose edges are ``MixedEdge``s; the same node sums, in the same order."""

    def __init__(self, candidates: Mapping[str, Sequence[str]], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({e: MixedEdge(candidates[e], channels) for e in EDGES})

    def forward(self, x: torch.Tensor, arch: Mapping[str, Choice]) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            edge = f"edge_{node}_0"
            out = self.edges[edge](x, arch[edge])
            for src in range(1, node):
                edge = f"edge_{node}_{src}"
                out = out + self.edges[edge](nodes[src], arch[edge])
            nodes.append(out)
        return nodes[3]


class SuperNet(nn.Module):
    """``NB201Net``'s layout (stem, stages, reductions, head) with ``SuperCell``s.

    Args:
        candidates: The candidate ops of each edge of ``EDGES``.
        spec: The data: image ``input_shape`` (C, H, W) and ``num_classes``.
        channels: Channels of the first stage (doubled by each reduction).
        cells_per_stage: Cells per stage.
    """

    def __init__(
        self,
        candidates: Mapping[str, Sequence[str]],
        spec: DataSpec,
        channels: int,
        cells_per_stage: int,
    ) -> None:
        super().__init__()
        self.candidates = {edge: tuple(candidates[edge]) for edge in EDGES}
        self.spec, self.channels, self.cells_per_stage = spec, channels, cells_per_stage
        self.stem, layers, width = build_stages(
            spec.input_shape, channels, cells_per_stage, lambda w: SuperCell(self.candidates, w)
        )
        self.cells = nn.ModuleList(layers)
        self.last_act = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, spec.num_classes)

    def forward(self, x: torch.Tensor, arch: Mapping[str, Choice]) -> torch.Tensor:
        """Logits of the cell ``arch`` (op names: one path; weight vectors: a mixture)."""
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x, arch) if isinstance(layer, SuperCell) else layer(x)
        x = self.last_act(x)
        return self.head(self.pool(x).flatten(1))


def copy_path(supernet: SuperNet, cell: Mapping[str, str], net: NB201Net) -> NB201Net:
    """Load the supernet's weights of ``cell``'s path into ``net``, an ``NB201Net`` of
    ``cell`` with the supernet's ``channels`` and ``cells_per_stage``; BatchNorm running
    statistics are copied too, so in eval mode it computes what ``supernet(x, cell)`` does."""
    for name in ("stem", "last_act", "head"):
        getattr(net, name).load_state_dict(getattr(supernet, name).state_dict())
    for source, target in zip(supernet.cells, net.cells, strict=True):
        if isinstance(target, NB201Cell):
            for edge, op in target.edges.items():
                op.load_state_dict(source.edges[edge].ops[cell[edge]].state_dict())
        else:
            target.load_state_dict(source.state_dict())
    return net
