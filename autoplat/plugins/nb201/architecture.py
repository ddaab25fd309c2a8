"""The NAS-Bench-201 network as architecture ``nb201``, supernet-capable for SPOS and DARTS."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import nn

from autoplat.core.interfaces import LAYERS, SIZE, DataSpec, Range, SupernetArchitecture
from autoplat.core.space import Categorical, Fixed, SearchSpace
from autoplat.plugins.nb201.cell import EDGES, OPS
from autoplat.plugins.nb201.network import NB201Net, cost
from autoplat.plugins.nb201.supernet import SuperNet, copy_path


class NB201(SupernetArchitecture):
    """The NAS-Bench-201 network; params: the 6 edges, channels, cells_per_stage.

    Its supernet's choices are the 6 edges; ``channels`` and ``cells_per_stage`` (fixed
    in the space, else ``defaults``) shape it.
    """

    name: ClassVar[str] = "nb201"
    task: ClassVar[str] = "classification"
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    default_space: ClassVar[str] = "nb201"
    defaults: ClassVar[dict[str, Any]] = {"channels": 16, "cells_per_stage": 1}
    param_ranges: ClassVar[dict[str, Range]] = {"channels": SIZE, "cells_per_stage": LAYERS}

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build the network (for ``spec``, when given), or None."""
        for edge in EDGES:
            if edge not in params:
                return f"nb201: missing '{edge}' (a cell needs all of {', '.join(EDGES)})"
            if params[edge] not in OPS:
                return f"nb201: '{edge}' = {params[edge]!r} is not one of {OPS}"
        if (reason := self.range_problem({**self.defaults, **params})) is not None:
            return reason
        if spec is not None and len(spec.input_shape) != 3:
            return f"nb201: needs images shaped (C, H, W), got input shape {spec.input_shape}"
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> nn.Module:
        """Build the network; ``channels`` and ``cells_per_stage`` default to ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        return NB201Net(
            ops={edge: p[edge] for edge in EDGES},
            input_shape=spec.input_shape,
            num_classes=spec.num_classes,
            channels=int(p["channels"]),
            cells_per_stage=int(p["cells_per_stage"]),
        )

    # -- the supernet (SupernetArchitecture) ---------------------------------------------
    def supernet_choices(self, space: SearchSpace) -> dict[str, tuple[str, ...]]:
        """Each edge's ops: a list of ops from ``OPS`` (any subset) or one fixed op."""
        missing = [edge for edge in EDGES if edge not in space.dims]
        if missing:
            raise ValueError(
                f"nb201's supernet searches the cell's edges, but the space has no "
                f"{', '.join(missing)}; use the nb201 space"
            )
        choices: dict[str, tuple[str, ...]] = {}
        for edge in EDGES:
            dim = space.dims[edge]
            if isinstance(dim, Categorical):
                ops = dim.choices
            elif isinstance(dim, Fixed):
                ops = (dim.value,)
            else:
                raise ValueError(
                    f"'{edge}' must be a list of ops from {', '.join(OPS)}, not a range"
                )
            unknown = [op for op in ops if op not in OPS]
            if unknown:
                raise ValueError(
                    f"'{edge}' has unknown ops {', '.join(map(repr, unknown))}; "
                    f"choose from {', '.join(OPS)}"
                )
            choices[edge] = tuple(dict.fromkeys(ops))
        return choices

    def _shape(self, params: dict[str, Any]) -> dict[str, int]:
        """``channels`` and ``cells_per_stage`` of ``params``, else of ``defaults``."""
        fixed = {**self.defaults, **params}
        return {key: int(fixed[key]) for key in ("channels", "cells_per_stage")}

    def build_supernet(
        self, choices: dict[str, tuple[str, ...]], params: dict[str, Any], spec: DataSpec
    ) -> SuperNet:
        """A ``SuperNet`` with each edge's ``choices``."""
        return SuperNet(choices, spec, **self._shape(params))

    def inherit(self, supernet: nn.Module, path: dict[str, str]) -> NB201Net:
        """The ``NB201Net`` of ``path`` with the supernet's width, cells and path weights."""
        assert isinstance(supernet, SuperNet)
        shape = {"channels": supernet.channels, "cells_per_stage": supernet.cells_per_stage}
        net = self.build({**path, **shape}, supernet.spec).to(supernet.head.weight.device)
        return copy_path(supernet, path, net)

    def path_cost(
        self, choices: dict[str, tuple[str, ...]], params: dict[str, Any], spec: DataSpec
    ) -> Callable[[Mapping[str, str]], tuple[int, int]]:
        """Parameters and FLOPs of the network of a cell (``cost``), without building it.

        Every edge's op adds its own cost, so the networks of the all-"none" cell and of
        one op on one edge give every cell's cost.
        """
        shape = self._shape(params)
        empty = dict.fromkeys(EDGES, "none")

        def measure(cell: Mapping[str, str]) -> tuple[int, int]:
            return cost(self.build({**cell, **shape}, spec), spec.input_shape)

        base = measure(empty)
        extra = {}
        for op in {op for ops in choices.values() for op in ops}:
            n_params, flops = measure({**empty, EDGES[0]: op})
            extra[op] = (n_params - base[0], flops - base[1])
        return lambda cell: (
            base[0] + sum(extra[op][0] for op in cell.values()),
            base[1] + sum(extra[op][1] for op in cell.values()),
        )
