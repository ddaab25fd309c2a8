"""The NAS-Bench-201 architecture: the contract, the cell's semantics, and real training."""

from __future__ import annotations

import math

import pytest
import torch

from autoplat.core.interfaces import DataSpec
from autoplat.core.registry import get_registry
from autoplat.core.space import SearchSpace
from autoplat.core.training import train_classification
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.nb201.architecture import NB201
from autoplat.plugins.nb201.cell import EDGES, N_CELLS, OPS, cell_params
from autoplat.plugins.nb201.network import NB201Cell, NB201Net, cost
from autoplat.testing import ArchitectureContract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = DataSpec("classification", "image", (1, 8, 8), 10)


def cell(op: str, **edges: str) -> dict[str, str]:
    """Params with every edge ``op`` except the ones given."""
    return {**dict.fromkeys(EDGES, op), **edges}


class TestNB201(ArchitectureContract):
    """The default space; its low corner is the disconnected all-"none" cell."""

    @pytest.fixture
    def architecture(self):
        return NB201()


class TestNB201OnMnist(ArchitectureContract):
    """28x28 images (3 stages), 2 cells per stage, conv cells."""

    @pytest.fixture
    def architecture(self):
        return NB201()

    @pytest.fixture
    def data_spec(self):
        return DataSpec("classification", "image", (1, 28, 28), 10)

    @pytest.fixture
    def space(self):
        ops = ["nor_conv_1x1", "nor_conv_3x3"]
        return SearchSpace.from_dict(
            {**{edge: ops for edge in EDGES}, "channels": [8], "cells_per_stage": [2]}
        )


def test_default_space_is_the_table() -> None:
    arch = NB201()
    space = get_registry().get("search_spaces", arch.default_space).load()
    assert set(space.dims) == set(EDGES) and len(EDGES) == 6
    assert all(list(space.dims[edge].choices) == list(OPS) for edge in EDGES)
    assert math.prod(len(space.dims[edge].choices) for edge in EDGES) == N_CELLS == 15_625


def test_every_op_appears() -> None:
    params = dict(zip(EDGES, [*OPS, "nor_conv_3x3"], strict=True))
    model = NB201().build(params, DIGITS)
    kinds = {
        type(m).__name__
        for c in model.modules()
        if isinstance(c, NB201Cell)
        for m in c.edges.values()
    }
    assert kinds == {"Zero", "Identity", "ReLUConvBN", "AvgPool2d"}
    cells = [m for m in model.modules() if isinstance(m, NB201Cell)]
    assert len(cells) == 2 and all(len(c.edges) == 6 for c in cells)  # 8x8: 2 stages
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize(
    ("params", "scale"),
    [
        (
            cell("none", edge_1_0="skip_connect", edge_2_1="skip_connect", edge_3_2="skip_connect"),
            1,
        ),
        (cell("none", edge_3_0="skip_connect"), 1),
        (cell("skip_connect"), 4),  # node1 = x, node2 = x + x, node3 = x + x + 2x
        (cell("skip_connect", edge_2_1="none", edge_3_2="none"), 2),  # node3 = x + x
    ],
)
def test_cell_sums_its_edges(params: dict[str, str], scale: int) -> None:
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(NB201Cell(params, 4)(x), scale * x)


def test_disconnected_cell_gives_constant_logits() -> None:
    model = NB201().build(cell("none", edge_1_0="nor_conv_3x3", edge_2_0="avg_pool_3x3"), DIGITS)
    model.eval()  # node 3 has only "none" edges in: no path from the input
    with torch.no_grad():
        logits = model(torch.randn(16, 1, 8, 8))
    assert torch.allclose(logits, logits[:1].expand_as(logits))


def test_check_params() -> None:
    arch = NB201()
    assert arch.check_params(cell_params(0)) is None
    assert "edge_3_2" in arch.check_params(
        {k: v for k, v in cell("none").items() if k != "edge_3_2"}
    )
    assert "not one of" in arch.check_params(cell("none", edge_2_0="conv5x5"))
    assert "channels" in arch.check_params({**cell("none"), "channels": 0})
    with pytest.raises(ValueError, match="images"):
        arch.build(cell("none"), DataSpec("classification", "image", (64,), 10))


def test_net_channels_and_stages() -> None:
    net = NB201Net(cell("skip_connect"), (3, 32, 32), 7, channels=8, cells_per_stage=3)
    assert sum(isinstance(m, NB201Cell) for m in net.modules()) == 9
    assert net.head.in_features == 32 and net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.slow  # trains for seconds
def test_good_cell_beats_disconnected_on_digits() -> None:
    dataset = Digits()
    splits = dataset.load(dataset.Options(), 0)
    hp = {"epochs": 3, "lr": 0.01}
    results = {}
    for name, params in {"conv": cell("nor_conv_3x3"), "none": cell("none")}.items():
        torch.manual_seed(0)
        model = NB201().build(params, splits.spec)
        results[name] = train_classification(model, splits, hp, lambda *_: None, 0)
    assert results["conv"]["val_accuracy"] > 0.8
    assert results["none"]["val_accuracy"] < 0.2  # chance, like the table's dead cells


CIFAR10 = DataSpec("classification", "image", (3, 32, 32), 10)


def test_five_cells_per_stage_is_the_benchmark_network() -> None:
    """NAS-Bench-201's layout (C=16, N=5): stem, 5 cells, reduction, 5 cells, reduction,
    5 cells, BN-ReLU, GAP, linear. Its published cifar10-valid range: 0.073306 to 1.531546
    M params, 7.78305 to 220.11969 M FLOPs (cifar100's largest: 1.537396, 220.12554)."""
    params = {**cell("nor_conv_3x3"), "channels": 16, "cells_per_stage": 5}
    net = NB201().build(params, CIFAR10)
    kinds = [type(layer).__name__ for layer in net.cells]
    stage = ["NB201Cell"] * 5
    assert kinds == [*stage, "ResidualReduction", *stage, "ResidualReduction", *stage]
    cells = [layer for layer in net.cells if isinstance(layer, NB201Cell)]
    assert [c.edges["edge_1_0"][1].in_channels for c in cells] == [16] * 5 + [32] * 5 + [64] * 5
    assert [type(m).__name__ for m in net.stem] == ["Conv2d", "BatchNorm2d"]
    assert isinstance(net.pool, torch.nn.AdaptiveAvgPool2d) and net.head.in_features == 64
    assert cost(net, (3, 32, 32)) == (1_531_546, 220_119_690)  # the largest cell
    smallest = NB201().build({**params, **cell("none")}, CIFAR10)
    assert cost(smallest, (3, 32, 32)) == (73_306, 7_783_050)
    cifar100 = NB201().build(params, DataSpec("classification", "image", (3, 32, 32), 100))
    assert cost(cifar100, (3, 32, 32)) == (1_537_396, 220_125_540)
