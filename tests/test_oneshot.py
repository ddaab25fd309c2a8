"""One-shot NAS (SPOS, DARTS) on the NAS-Bench-201 cell, trained for real on digits."""

from __future__ import annotations

import random
import statistics

import pytest
import torch
from pydantic import ValidationError

from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import Splits
from autoplat.core.space import SearchSpace
from autoplat.core.training import train_classification
from autoplat.plugins.architectures.nb201 import NB201
from autoplat.plugins.benchmarks.nb201 import EDGES, OPS
from autoplat.plugins.datasets.digits import Digits
from autoplat.strategies.search.oneshot import OneShot, register_strategies
from autoplat.strategies.search.oneshot.darts import DARTS, derive
from autoplat.strategies.search.oneshot.spos import SPOS
from autoplat.strategies.search.oneshot.supernet import inherit, inherited_score

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXED = {"channels": 8, "cells_per_stage": 1, "lr": 0.01, "epochs": 2}
TINY_SPOS = SPOS.Options(epochs=3, population=6, sample_size=2, cycles=6, eval_cells=2)
TINY_DARTS = DARTS.Options(epochs=2, arch_lr=0.05)


def nb201_space(**overrides) -> SearchSpace:
    """Every edge over every op, plus ``FIXED``, with ``overrides`` replacing dimensions."""
    return SearchSpace.from_dict({**dict.fromkeys(EDGES, list(OPS)), **FIXED, **overrides})


@pytest.fixture(scope="module")
def splits() -> Splits:
    digits = Digits()
    return digits.load(digits.Options(), seed=0)


def run(strategy: OneShot, splits: Splits) -> tuple[list[dict], list[tuple[int, dict]]]:
    """The strategy's derived params and every report it made."""
    reports: list[tuple[int, dict]] = []
    derived = strategy.search(splits, lambda epoch, metrics: reports.append((epoch, metrics)))
    return derived, reports


# -- the supernet ----------------------------------------------------------------------
@pytest.mark.parametrize("cells_per_stage", [1, 2])
def test_inherited_net_computes_the_supernet_path(splits: Splits, cells_per_stage: int) -> None:
    space = nb201_space(cells_per_stage=cells_per_stage)
    torch.manual_seed(0)
    supernet = SPOS(space).build_supernet(splits.spec, channels=None)
    x = splits.train[0][:128]
    rng = random.Random(0)
    supernet.train()
    with torch.no_grad():  # move every BatchNorm's running statistics off their init
        for _ in range(8):
            supernet(x, {edge: rng.choice(OPS) for edge in EDGES})
    supernet.eval()
    cells = [dict(zip(EDGES, [*OPS, "nor_conv_3x3"], strict=True))]
    cells += [{edge: rng.choice(OPS) for edge in EDGES} for _ in range(3)]
    xv = splits.val[0]
    for cell in cells:
        net = inherit(supernet, cell).eval()
        with torch.no_grad():
            expected = supernet(xv, cell)
            assert torch.equal(net(xv), expected)
            one_hot = {e: torch.tensor([float(op == cell[e]) for op in OPS]) for e in EDGES}
            torch.testing.assert_close(supernet(xv, one_hot), expected)
    # the copy owns its weights: recalibrating it leaves the supernet as it was
    before = supernet(xv, cells[0])
    inherited_score(supernet, cells[0], x, splits.val, batch_size=64)
    assert torch.equal(supernet(xv, cells[0]), before)
    assert not torch.equal(supernet(xv, cells[1]), before)  # another path computes otherwise


# -- the strategies --------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "options"), [(SPOS, TINY_SPOS), (DARTS, TINY_DARTS)])
def test_same_seed_same_search(cls: type[OneShot], options, splits: Splits) -> None:
    space = nb201_space()
    first = run(cls(space, seed=3, options=options), splits)
    assert first == run(cls(space, seed=3, options=options), splits)
    _, other_reports = run(cls(space, seed=4, options=options), splits)
    assert other_reports != first[1]
    assert [epoch for epoch, _ in first[1]] == list(range(1, options.epochs + 1))


def test_spos_derived_params_train_as_nb201(splits: Splits) -> None:
    space = nb201_space()
    derived, reports = run(SPOS(space, options=TINY_SPOS.model_copy(update={"top_k": 3})), splits)
    assert len(derived) == 3 and len({tuple(p.items()) for p in derived}) == 3
    for params in derived:
        assert space.contains(params)
        assert {key: params[key] for key in FIXED} == FIXED
        assert NB201().check_params(params, splits.spec) is None
    assert set(reports[-1][1]) == {"train_loss", "val_accuracy", "val_loss"}
    metrics = train_classification(
        NB201().build(derived[0], splits.spec), splits, derived[0], lambda *_: None, 0
    )
    assert metrics["test_accuracy"] > 0.3  # a real net on digits, 10 classes, 2 epochs


def test_spos_evolution_beats_random_cells(splits: Splits) -> None:
    spos = SPOS(nb201_space(), options=TINY_SPOS.model_copy(update={"top_k": 3}))
    derived, _ = run(spos, splits)
    ranked = sorted(spos.history, key=lambda entry: (-entry[1], entry[2]))
    assert [{e: p[e] for e in EDGES} for p in derived] == [cell for cell, _, _ in ranked[:3]]
    calibration = splits.train[0][:256]
    rng = random.Random(7)
    random_accuracy = statistics.fmean(
        inherited_score(spos.supernet, spos.random_cell(rng), calibration, splits.val, 64)[0]
        for _ in range(8)
    )
    best = {edge: derived[0][edge] for edge in EDGES}
    best_accuracy, _ = inherited_score(spos.supernet, best, calibration, splits.val, 64)
    assert best_accuracy > random_accuracy


def test_darts_moves_alpha_and_derives_its_argmax(splits: Splits) -> None:
    ops = ["skip_connect", "nor_conv_1x1", "nor_conv_3x3"]
    space = nb201_space(**dict.fromkeys(EDGES[1:], ops), edge_1_0="nor_conv_3x3")
    darts = DARTS(space, options=TINY_DARTS)
    (params,), reports = run(darts, splits)
    assert [len(darts.alphas[edge]) for edge in EDGES] == [1, 3, 3, 3, 3, 3]
    # alpha starts at 1e-3 * N(0, 1); the Adam steps on validation batches move it further
    assert max(alpha.abs().max().item() for alpha in darts.alphas.values()) > 0.05
    argmax = {edge: darts.candidates[edge][int(darts.alphas[edge].argmax())] for edge in EDGES}
    assert (
        {edge: params[edge] for edge in EDGES} == argmax == derive(darts.alphas, darts.candidates)
    )
    assert params["edge_1_0"] == "nor_conv_3x3" and space.contains(params)
    last = reports[-1][1]
    assert last["skip_edges"] == sum(params[edge] == "skip_connect" for edge in EDGES)
    assert 0.0 <= last["derived_val_accuracy"] <= 1.0 and last["val_accuracy"] > 0.5


# -- options, spaces and registration --------------------------------------------------
@pytest.mark.parametrize(
    ("space", "message"),
    [
        (SearchSpace.from_dict({"depth": [1, 2], "width": 16}), "no edge_1_0"),
        (nb201_space(lr={"low": 1e-3, "high": 1e-1, "log": True}), "'lr' vary"),
        (
            nb201_space(edge_2_1=["nor_conv_3x3", "conv_5x5"]),
            "'edge_2_1' has unknown ops 'conv_5x5'",
        ),
        (nb201_space(edge_3_0={"low": 0, "high": 4}), "'edge_3_0' must be a list of ops"),
    ],
)
def test_refuses_spaces_it_cannot_search(space: SearchSpace, message: str) -> None:
    for cls in (SPOS, DARTS):
        with pytest.raises(ConfigError, match=message):
            cls(space)


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="sample_size"):
        SPOS.Options(population=4, sample_size=5)
    with pytest.raises(ValidationError, match="extra"):
        DARTS.Options(arch_learning_rate=0.1)


def test_registers_both_strategies() -> None:
    found: list[type[OneShot]] = []
    register_strategies(found.append)
    assert {cls.name: cls for cls in found} == {"spos": SPOS, "darts": DARTS}
