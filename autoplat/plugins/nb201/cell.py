"""The NAS-Bench-201 cell as data: its ops, its edges and its encodings.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search" (ICLR 2020). A cell has 4 nodes; each of its 6 edges (``edge_J_I``, from node I
to node J, as in ``search_spaces/nb201.toml``) takes one of 5 ops, so there are
5**6 = 15,625 cells. A cell is a dict of edge -> op; ``cell_index`` is its row in the
table and ``to_arch_string`` its NAS-Bench-201 string.
"""

from __future__ import annotations

from typing import Any

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ("edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2")
N_CELLS = len(OPS) ** len(EDGES)


def to_arch_string(params: dict[str, Any]) -> str:
    """The NAS-Bench-201 string of a cell, e.g. ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    nodes = []
    for node in (1, 2, 3):
        ops = [f"{params[f'edge_{node}_{src}']}~{src}" for src in range(node)]
        nodes.append("|" + "|".join(ops) + "|")
    return "+".join(nodes)


def from_arch_string(arch: str) -> dict[str, str]:
    """The params of a NAS-Bench-201 string (the inverse of ``to_arch_string``)."""
    params: dict[str, str] = {}
    nodes = arch.split("+")
    if len(nodes) != 3:
        raise ValueError(f"a NAS-Bench-201 cell has 3 nodes separated by '+', got {arch!r}")
    for node, text in enumerate(nodes, start=1):
        ops = text.strip("|").split("|")
        if len(ops) != node:
            raise ValueError(f"node {node} of {arch!r} needs {node} inputs, got {len(ops)}")
        for src, item in enumerate(ops):
            op, _, index = item.partition("~")
            if op not in OPS or index != str(src):
                raise ValueError(f"cannot read {item!r} in {arch!r} as 'op~{src}' with op in {OPS}")
            params[f"edge_{node}_{src}"] = op
    return params


def cell_index(params: dict[str, Any]) -> int:
    """The row of a cell in the table: its ops as a base-5 number (extra keys are ignored)."""
    index = 0
    for edge in EDGES:
        try:
            index = index * len(OPS) + OPS.index(params[edge])
        except KeyError:
            raise ValueError(
                f"a NAS-Bench-201 cell needs '{edge}'; got keys {sorted(params)}"
            ) from None
        except ValueError:
            raise ValueError(f"'{edge}' = {params[edge]!r} is not one of {OPS}") from None
    return index


def cell_params(index: int) -> dict[str, str]:
    """The params of table row ``index`` (the inverse of ``cell_index``)."""
    ops = []
    for _ in EDGES:
        index, op = divmod(index, len(OPS))
        ops.append(OPS[op])
    return dict(zip(EDGES, reversed(ops), strict=True))
