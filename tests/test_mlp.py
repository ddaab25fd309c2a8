"""The MLP architecture and its mlp search space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autoplat import search_spaces
from autoplat.core.export import to_onnx
from autoplat.core.interfaces import DataSpec
from autoplat.core.predict import open_session, run_batches
from autoplat.core.space import NamedSpace, SearchSpace
from autoplat.core.training import TRAINER_PARAMS, train_classification
from autoplat.plugins.architectures.mlp import MLP
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.datasets.splits import SplitOptions
from autoplat.testing import ArchitectureContract, corner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TABULAR = DataSpec("classification", "tabular", (5,), 3, ("a", "b", "c"))
DIGITS = DataSpec("classification", "image", (1, 8, 8), 10)


@pytest.fixture(scope="module")
def mlp_space() -> SearchSpace:
    spaces: list[NamedSpace] = []
    search_spaces.register_search_spaces(spaces.append)
    (named,) = [s for s in spaces if s.name == "mlp"]
    assert named.description
    return named.load()


class TestMLPOnImages(ArchitectureContract):
    @pytest.fixture
    def architecture(self) -> MLP:
        return MLP()


class TestMLPOnTables(ArchitectureContract):
    @pytest.fixture
    def architecture(self) -> MLP:
        return MLP()

    @pytest.fixture
    def data_spec(self) -> DataSpec:
        return TABULAR


def test_space_keys_are_trainer_or_architecture_params(mlp_space: SearchSpace) -> None:
    assert set(mlp_space.dims) <= set(TRAINER_PARAMS) | set(MLP.defaults)
    assert set(MLP.defaults) <= set(mlp_space.dims)
    for high in (False, True):
        params = {k: v for k, v in corner(mlp_space, high).items() if k not in TRAINER_PARAMS}
        assert MLP().check_params(params) is None


def test_layers_head_and_dropout() -> None:
    model = MLP().build({"hidden": 16, "depth": 3, "dropout": 0.2, "activation": "relu"}, DIGITS)
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (16, 10)
    assert list(model.children())[-1] is model.head  # its input is the penultimate embedding
    layers = list(model.body)
    assert [type(m) for m in layers[1:4]] == [nn.Linear, nn.ReLU, nn.Dropout]
    assert sum(isinstance(m, nn.Dropout) for m in layers) == 3
    assert all(m.p == 0.2 for m in layers if isinstance(m, nn.Dropout))
    assert layers[1].in_features == 64  # 1 x 8 x 8 flattened

    seen: list[torch.Tensor] = []
    model.head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    x = torch.rand(6, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x)) and seen[0].shape == (6, 16)
    model.train()  # MC dropout: passes differ
    assert not torch.equal(model(x), model(x))


def test_defaults_fill_missing_params() -> None:
    model = MLP().build({}, TABULAR)
    assert model.head.in_features == MLP.defaults["hidden"]
    assert sum(isinstance(m, nn.GELU) for m in model.body) == MLP.defaults["depth"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"hidden": 0}, "hidden must be an integer in [1, 65536]"),
        ({"hidden": 32.5}, "absurd allocations), got 32.5"),
        ({"depth": True}, "depth must be an integer in [1, 1024]"),
        ({"depth": -1}, "depth must be an integer in [1, 1024]"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1), got 1.0"),
        ({"dropout": "0.1"}, "dropout must be a number in [0, 1), got '0.1'"),
        ({"activation": "tanh"}, "activation must be one of 'gelu', 'relu', got 'tanh'"),
    ],
)
def test_check_params_refuses_bad_values(params: dict, fragment: str) -> None:
    reason = MLP().check_params(params)
    assert reason is not None and reason.startswith("mlp: ") and fragment in reason
    with pytest.raises(ValueError) as info:
        MLP().build(params, TABULAR)
    assert str(info.value) == reason


def test_numpy_integers_are_accepted() -> None:
    assert MLP().check_params({"hidden": np.int64(8), "depth": np.int32(1)}) is None


def test_onnx_export_has_a_dynamic_batch() -> None:
    torch.manual_seed(0)
    model = MLP().build({"hidden": 32, "depth": 2}, DIGITS).eval()
    session = open_session(
        to_onnx(model, torch.rand(2, 1, 8, 8)), providers=["CPUExecutionProvider"]
    )
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run_batches(session, x.numpy()), expected, atol=1e-5, rtol=0)


def test_mlp_learns_digits() -> None:
    splits = Digits().load(SplitOptions(), seed=0)
    torch.manual_seed(0)
    model = MLP().build({"hidden": 128, "depth": 2, "dropout": 0.1}, splits.spec)
    params = {"epochs": 10, "lr": 3e-3, "batch_size": 64}
    metrics = train_classification(model, splits, params, lambda epoch, m: None, seed=0)
    assert metrics["val_accuracy"] > 0.9 and metrics["test_accuracy"] > 0.9  # chance: 0.1
