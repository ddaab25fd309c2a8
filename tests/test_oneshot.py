"""One-shot NAS (SPOS, DARTS) on the NAS-Bench-201 cell, trained for real on digits."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics

import pytest
import torch
from pydantic import ValidationError

from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import DataSpec, Splits
from autoplat.core.registry import Registry
from autoplat.core.space import SearchSpace
from autoplat.core.training import train_classification
from autoplat.plugins.architectures.vit import ViT
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.nb201.architecture import NB201
from autoplat.plugins.nb201.cell import EDGES, OPS
from autoplat.plugins.nb201.network import cost
from autoplat.plugins.nb201.supernet import SuperNet
from autoplat.strategies.search.oneshot.base import OneShot
from autoplat.strategies.search.oneshot.darts import (
    DARTS,
    derive,
    mixture_loss,
    unrolled_arch_grads,
)
from autoplat.strategies.search.oneshot.spos import SPOS, crossover, mutate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXED = {"channels": 8, "cells_per_stage": 1, "lr": 0.01, "epochs": 2}
TINY_SPOS = SPOS.Options(
    epochs=3, population=6, parents=2, mutations=2, crossovers=2, iterations=3, eval_cells=2
)
TINY_DARTS = DARTS.Options(epochs=2, arch_lr=0.05)
NB = {"architecture": NB201()}  # the architecture whose supernet the strategies train


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
    spos = SPOS(space, **NB)
    supernet = spos.build_supernet(splits.spec, channels=None)
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
        net = NB201().inherit(supernet, cell).eval()
        with torch.no_grad():
            expected = supernet(xv, cell)
            assert torch.equal(net(xv), expected)
            one_hot = {e: torch.tensor([float(op == cell[e]) for op in OPS]) for e in EDGES}
            torch.testing.assert_close(supernet(xv, one_hot), expected)
    # the copy owns its weights: recalibrating it leaves the supernet as it was
    before = supernet(xv, cells[0])
    spos.inherited_score(supernet, cells[0], x, splits.val, batch_size=64)
    assert torch.equal(supernet(xv, cells[0]), before)
    assert not torch.equal(supernet(xv, cells[1]), before)  # another path computes otherwise


# -- the strategies --------------------------------------------------------------------
@pytest.mark.slow  # two searches of each strategy: ~5-10 s
@pytest.mark.parametrize(("cls", "options"), [(SPOS, TINY_SPOS), (DARTS, TINY_DARTS)])
def test_same_seed_same_search(cls: type[OneShot], options, splits: Splits) -> None:
    space = nb201_space()
    first = run(cls(space, seed=3, options=options, **NB), splits)
    assert first == run(cls(space, seed=3, options=options, **NB), splits)
    _, other_reports = run(cls(space, seed=4, options=options, **NB), splits)
    assert other_reports != first[1]
    assert [epoch for epoch, _ in first[1]] == list(range(1, options.epochs + 1))


@pytest.mark.slow  # trains for seconds
def test_spos_derived_params_train_as_nb201(splits: Splits) -> None:
    space = nb201_space()
    spos = SPOS(space, options=TINY_SPOS.model_copy(update={"top_k": 3}), **NB)
    derived, reports = run(spos, splits)
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


@pytest.mark.slow  # trains for seconds
def test_spos_evolution_beats_random_cells(splits: Splits) -> None:
    spos = SPOS(nb201_space(), options=TINY_SPOS.model_copy(update={"top_k": 3}), **NB)
    derived, _ = run(spos, splits)
    ranked = sorted(spos.history, key=lambda entry: (-entry[1], entry[2]))
    assert [{e: p[e] for e in EDGES} for p in derived] == [cell for cell, _, _ in ranked[:3]]
    calibration = splits.train[0][:256]
    rng = random.Random(7)
    random_accuracy = statistics.fmean(
        spos.inherited_score(spos.supernet, spos.random_cell(rng), calibration, splits.val, 64)[0]
        for _ in range(8)
    )
    best = {edge: derived[0][edge] for edge in EDGES}
    best_accuracy, _ = spos.inherited_score(spos.supernet, best, calibration, splits.val, 64)
    assert best_accuracy > random_accuracy


@pytest.mark.slow  # trains for seconds
def test_darts_moves_alpha_and_derives_its_argmax(splits: Splits) -> None:
    ops = ["skip_connect", "nor_conv_1x1", "nor_conv_3x3"]
    space = nb201_space(**dict.fromkeys(EDGES[1:], ops), edge_1_0="nor_conv_3x3")
    darts = DARTS(space, options=TINY_DARTS, **NB)
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
    assert last["derived_val_accuracy"] > 0.3 and last["val_accuracy"] > 0.5  # chance: 0.1


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
            cls(space, **NB)


def test_refuses_an_architecture_without_a_supernet() -> None:
    for cls in (SPOS, DARTS):
        with pytest.raises(
            ConfigError,
            match=f"'{cls.name}' trains a weight-sharing supernet, "
            "which architecture 'vit' cannot build",
        ):
            cls(nb201_space(), architecture=ViT())


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="mutations \\+ crossovers must be at most"):
        SPOS.Options(population=4, mutations=3, crossovers=2)
    with pytest.raises(ValidationError, match="no longer takes 'cycles'.*use 'iterations'"):
        SPOS.Options(cycles=48)
    with pytest.raises(ValidationError, match="no longer takes 'sample_size'.*'parents'"):
        SPOS.Options(sample_size=4)
    with pytest.raises(ValidationError, match="extra"):
        DARTS.Options(arch_learning_rate=0.1)


def test_registers_both_strategies() -> None:
    registry = Registry()
    registry.load_entry_points()
    assert registry.plugins["one-shot"].registered == {"strategies": ["spos", "darts"]}
    assert {n: registry.get("strategies", n) for n in ("spos", "darts")} == {
        "spos": SPOS,
        "darts": DARTS,
    }


# -- SPOS's evolutionary search (Guo et al. 2020, Algorithm 1) ----------------------------
def test_spos_crossover_and_mutation_rules() -> None:
    rng = random.Random(0)
    conv, none = dict.fromkeys(EDGES, "nor_conv_3x3"), dict.fromkeys(EDGES, "none")
    children = [crossover(conv, none, rng) for _ in range(1000)]
    assert all(set(child.values()) <= {"nor_conv_3x3", "none"} for child in children)
    from_first = statistics.fmean(op == "nor_conv_3x3" for c in children for op in c.values())
    assert 0.47 < from_first < 0.53  # each edge from either parent with equal chance

    candidates = dict.fromkeys(EDGES, OPS)
    mutants = [mutate(conv, candidates, 0.1, rng) for _ in range(2000)]
    changed = statistics.fmean(op != "nor_conv_3x3" for m in mutants for op in m.values())
    assert 0.07 < changed < 0.09  # re-drawn with p = 0.1, to another op 4 times in 5
    assert mutate(conv, candidates, 0.0, rng) == conv
    narrow = {**candidates, "edge_2_1": ("skip_connect",)}
    assert all(mutate(conv, narrow, 1.0, rng)["edge_2_1"] == "skip_connect" for _ in range(20))


def conv_score(cell: dict[str, str]) -> tuple[float, float]:
    """A stand-in for inherited accuracy: conv edges count, 3x3 ones a little more."""
    convs = sum(op.startswith("nor_conv") for op in cell.values())
    return convs + 0.1 * sum(op == "nor_conv_3x3" for op in cell.values()), 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spos_search_keeps_the_params_and_flops_limits(seed: int) -> None:
    spec = DataSpec("classification", "image", (1, 8, 8), 10)
    options = SPOS.Options(iterations=8)  # 16 x 8 = 128 of 15,625 cells at most
    free = SPOS(nb201_space(), seed=seed, options=options, **NB)
    measure = free.network_cost(spec)
    rng = random.Random(seed)
    for cell in [dict.fromkeys(EDGES, op) for op in OPS] + [free.random_cell(rng)]:
        net = NB201().build({**cell, **FIXED}, spec)
        assert measure(cell) == cost(net, spec.input_shape)
    assert free.evolve(conv_score, measure) == [dict.fromkeys(EDGES, "nor_conv_3x3")]
    assert free.rejected == 0 and len(free.history) == 128

    one_by_one = measure(dict.fromkeys(EDGES, "nor_conv_1x1"))  # 3x3 convs cost more
    for limit in ({"max_params": one_by_one[0]}, {"max_flops": one_by_one[1]}):
        spos = SPOS(nb201_space(), seed=seed, options=options.model_copy(update=limit), **NB)
        assert spos.evolve(conv_score, measure) == [dict.fromkeys(EDGES, "nor_conv_1x1")]
        assert spos.rejected > 0 and len(spos.history) <= 128
        keys = [tuple(cell.items()) for cell, _, _ in spos.history]
        assert len(set(keys)) == len(keys)  # a cell seen before is drawn again
        assert all(measure(cell) <= one_by_one for cell, _, _ in spos.history)


def test_spos_refuses_a_limit_no_cell_meets() -> None:
    spec = DataSpec("classification", "image", (1, 8, 8), 10)
    spos = SPOS(nb201_space(), options=SPOS.Options(max_params=100), **NB)
    with pytest.raises(ConfigError, match="none of 160 random cells meets max_params = 100"):
        spos.evolve(conv_score, spos.network_cost(spec))


# -- second-order DARTS (Liu et al. 2019, eq. 7-8) -----------------------------------------
class SmoothMixture(torch.nn.Module):
    """A tiny smooth supernet: two mixed edges of tanh-linear ops, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.edges = torch.nn.ModuleList(
            torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3)) for _ in range(2)
        )
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, arch: dict[str, torch.Tensor]) -> torch.Tensor:
        for edge, ops in zip(("a", "b"), self.edges, strict=True):
            x = sum(w * torch.tanh(op(x)) for w, op in zip(arch[edge], ops, strict=True))
        return self.head(x)


def exact_unrolled(model, alphas, train, val, xi) -> torch.Tensor:
    """d/d alpha of L_val(w - xi grad_w L_train(w, alpha), alpha), by autograd through w'."""
    names = [name for name, _ in model.named_parameters()]
    w = [p.detach().requires_grad_() for _, p in model.named_parameters()]
    arch = {edge: alpha.detach().requires_grad_() for edge, alpha in alphas.items()}
    grads = torch.autograd.grad(
        mixture_loss(model, dict(zip(names, w, strict=True)), arch, train), w, create_graph=True
    )
    unrolled = {n: wi - xi * g for n, wi, g in zip(names, w, grads, strict=True)}
    return torch.cat(
        torch.autograd.grad(mixture_loss(model, unrolled, arch, val), [*arch.values()])
    )


def batches(shape, classes, generator) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    return tuple(
        (
            torch.randn(8, *shape, generator=generator, dtype=torch.float64),
            torch.randint(classes, (8,), generator=generator),
        )
        for _ in range(2)
    )


def test_darts_second_order_is_the_unrolled_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    smooth = SmoothMixture().double()
    alphas = {e: torch.randn(3, generator=generator, dtype=torch.float64) for e in ("a", "b")}
    train, val = batches((4,), 3, generator)
    exact = exact_unrolled(smooth, alphas, train, val, xi=0.5)
    first_order = exact_unrolled(smooth, alphas, train, val, xi=0.0)
    approx = torch.cat(unrolled_arch_grads(smooth, alphas, train, val, xi=0.5))  # r = 0.01
    assert (exact - first_order).abs().max() > 1e-4  # the second-order term: 6e-4 here
    torch.testing.assert_close(approx, exact, rtol=1e-4, atol=1e-6)

    # the NAS-Bench-201 supernet (ReLU, BatchNorm): exact once no ReLU flips within +-epsilon
    spec = DataSpec("classification", "image", (1, 8, 8), 3)
    supernet = SuperNet(dict.fromkeys(EDGES, OPS), spec, channels=3, cells_per_stage=1).double()
    alphas = {e: torch.randn(5, generator=generator, dtype=torch.float64) for e in EDGES}
    train, val = batches((1, 8, 8), 3, generator)
    exact = exact_unrolled(supernet, alphas, train, val, xi=0.5)
    approx = torch.cat(unrolled_arch_grads(supernet, alphas, train, val, xi=0.5, r=1e-6))
    assert (exact - exact_unrolled(supernet, alphas, train, val, xi=0.0)).abs().max() > 1e-3
    torch.testing.assert_close(approx, exact, rtol=1e-5, atol=1e-8)


@pytest.mark.slow  # trains for seconds
def test_darts_second_order_search_runs(splits: Splits) -> None:
    small = dataclasses.replace(splits, train=tuple(t[:384] for t in splits.train))
    alphas = {}
    for order in (1, 2):
        options = DARTS.Options(epochs=1, arch_lr=0.05, order=order)
        darts = DARTS(nb201_space(), options=options, **NB)
        (params,), reports = run(darts, small)
        assert nb201_space().contains(params) and math.isfinite(reports[-1][1]["train_loss"])
        alphas[order] = torch.cat(list(darts.alphas.values()))
    assert alphas[2].abs().max() > 0.05  # Adam moved alpha
    assert not torch.allclose(alphas[1], alphas[2], atol=1e-3)  # on other gradients
