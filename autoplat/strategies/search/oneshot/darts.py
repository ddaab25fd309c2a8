"""DARTS: differentiable architecture search, after Liu et al. 2019.

"DARTS: Differentiable Architecture Search" (ICLR 2019). Each edge's output is the
softmax(alpha)-weighted sum of all its candidate ops; network weights and the
architecture weights alpha are trained alternately, and the derived cell takes the argmax
op of each edge, "none" included, as the NAS-Bench-201 paper does for its DARTS baseline.
``order = 1`` steps alpha on the plain validation gradient (the paper's first-order
approximation); ``order = 2`` on the unrolled gradient of eq. 7, the gradient in alpha of
L_val(w - xi grad_w L_train(w, alpha), alpha), with its Hessian-vector product by the
central finite difference of eq. 8 (epsilon = 0.01 / ||grad_w' L_val||, option
``hessian_r``), xi the weights' current learning rate. As in eq. 6, the virtual step is
plain gradient descent (DARTS's reference code adds momentum and weight decay to it).
The second-order step runs in full precision (no bf16 autocast: the finite difference
needs it) and costs about three times a first-order step.

Data: the weights train on ``splits.train`` and alpha on ``splits.val`` (as DARTS's
search-time "validation" half); ``splits.test`` is never read. The NAS-Bench-201 paper
(Dong & Yang 2020, Sec. 5) found DARTS collapsing to cells of skip connections on every
dataset; nothing here prevents that. Each epoch's report carries ``skip_edges`` (how
many edges' argmax is "skip_connect") and the derived cell's inherited accuracy, so a
collapse shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Splits
from autoplat.core.training import Report, autocast, check_finite, evaluate
from autoplat.strategies.search.oneshot.base import OneShot

Batch = tuple[torch.Tensor, torch.Tensor]


class Bound(nn.Module):
    """A supernet with its ``arch`` fixed, so it maps a batch to logits like any model."""

    def __init__(self, supernet: nn.Module, arch: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.supernet, self.arch = supernet, arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.arch)


def _shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Index batches of ``range(n)`` without end, reshuffled on every pass."""
    while True:
        yield from torch.randperm(n, generator=generator).to(device).split(batch_size)


def derive(
    alphas: Mapping[str, torch.Tensor], candidates: Mapping[str, tuple[str, ...]]
) -> dict[str, str]:
    """The cell taking each edge's highest-alpha op (the first one on ties)."""
    return {edge: candidates[edge][int(alpha.argmax())] for edge, alpha in alphas.items()}


def mixture_loss(
    supernet: nn.Module,
    weights: Mapping[str, torch.Tensor],
    alphas: Mapping[str, torch.Tensor],
    batch: Batch,
) -> torch.Tensor:
    """Cross-entropy of the softmax(``alphas``) mixture run with parameters ``weights``."""
    mixture = {edge: alpha.softmax(0) for edge, alpha in alphas.items()}
    return F.cross_entropy(functional_call(supernet, dict(weights), (batch[0], mixture)), batch[1])


def _grads(loss: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``d loss / d input`` for each input; zeros for an input the loss does not use."""
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


def unrolled_arch_grads(
    supernet: nn.Module,
    alphas: Mapping[str, torch.Tensor],
    train: Batch,
    val: Batch,
    xi: float,
    r: float = 0.01,
) -> list[torch.Tensor]:
    """DARTS's second-order architecture gradient (Liu et al. 2019, eq. 7 and 8).

    The gradient in alpha of ``L_val(w', alpha)`` with ``w' = w - xi grad_w L_train(w,
    alpha)``: ``grad_alpha L_val(w', alpha) - xi (grad_alpha L_train(w+, alpha) -
    grad_alpha L_train(w-, alpha)) / (2 epsilon)``, where ``w+- = w +- epsilon v``, ``v =
    grad_w' L_val(w', alpha)`` and ``epsilon = r / ||v||`` (the paper: r = 0.01).
    ``supernet`` is any module called as ``supernet(x, mixture)``. The difference is
    exact only where no ReLU changes sign between ``w-`` and ``w+``.

    Returns:
        One gradient per alpha, in the order of ``alphas``.
    """
    names = [name for name, _ in supernet.named_parameters()]
    w = [p.detach() for _, p in supernet.named_parameters()]
    fixed = {edge: alpha.detach() for edge, alpha in alphas.items()}

    def leaves(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [t.detach().requires_grad_() for t in tensors]

    def loss(
        weights: Sequence[torch.Tensor], arch: Mapping[str, torch.Tensor], batch: Batch
    ) -> torch.Tensor:
        return mixture_loss(supernet, dict(zip(names, weights, strict=True)), arch, batch)

    start = leaves(w)
    step = _grads(loss(start, fixed, train), start)
    unrolled = leaves([wi - xi * gi for wi, gi in zip(w, step, strict=True)])
    arch = dict(zip(alphas, leaves(list(fixed.values())), strict=True))
    grads = _grads(loss(unrolled, arch, val), [*arch.values(), *unrolled])
    d_alpha, v = grads[: len(arch)], grads[len(arch) :]
    epsilon = r / torch.cat([g.flatten() for g in v]).norm()

    def train_alpha_grads(sign: int) -> list[torch.Tensor]:
        shifted = [wi + sign * epsilon * vi for wi, vi in zip(w, v, strict=True)]
        arch = dict(zip(alphas, leaves(list(fixed.values())), strict=True))
        return _grads(loss(shifted, arch, train), list(arch.values()))

    plus, minus = train_alpha_grads(1), train_alpha_grads(-1)
    return [d - xi * (p - m) / (2 * epsilon) for d, p, m in zip(d_alpha, plus, minus, strict=True)]


class DARTS(OneShot):
    """DARTS: alternate Adam steps on alpha (val) and SGD steps on weights (train).

    Every step takes one validation batch for alpha (``order = 2``: and the step's
    training batch, for the unrolled gradient), then one training batch for the weights
    with alpha fixed; an epoch is one pass over the training split (validation
    batches cycle). After every epoch ``report`` gets the training loss, the mixed
    supernet's validation accuracy and loss, ``skip_edges``, and ``derived_val_accuracy``:
    the argmax cell's validation accuracy with inherited weights and recalibrated
    BatchNorm. ``search`` returns the single argmax cell.

    After ``search``: ``supernet`` is the trained supernet and ``alphas`` maps each edge
    to its final architecture weights (CPU), in the order of ``candidates[edge]``.
    """

    name = "darts"

    class Options(BaseOptions):
        epochs: int = Field(15, ge=1, description="supernet training epochs")
        lr: float = Field(0.025, gt=0, description="SGD learning rate, decayed to 0 by a cosine")
        momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
        weight_decay: float = Field(3e-4, ge=0, description="SGD weight decay")
        grad_clip: float = Field(5.0, gt=0, description="max gradient norm of the weights")
        arch_lr: float = Field(
            3e-3, gt=0, description="Adam learning rate of alpha (DARTS: 3e-4 for 50 epochs)"
        )
        arch_weight_decay: float = Field(1e-3, ge=0, description="Adam weight decay of alpha")
        order: Literal[1, 2] = Field(
            1, description="1: first-order alpha gradient; 2: the unrolled one (paper eq. 7-8)"
        )
        hessian_r: float = Field(
            0.01, gt=0, description="order 2: epsilon = hessian_r / ||v|| in eq. 8 (paper: 0.01)"
        )
        batch_size: int = Field(64, ge=1, description="batch size of both steps")
        channels: int | None = Field(
            None, ge=1, description="supernet width; None: the space's channels (nb201: 16)"
        )
        calibration_batches: int = Field(
            4, ge=1, description="training batches that re-estimate BatchNorm for the argmax cell"
        )

    options: Options

    def search(self, splits: Splits, report: Report) -> list[dict[str, Any]]:
        """Train weights and alpha alternately; return the argmax cell.

        Raises:
            TrialFailed: The training loss became NaN or infinite.
        """
        o = self.options
        device, generator, supernet, (x, y), (xv, yv), calibration = self.prepare(splits)
        alphas = {
            edge: (1e-3 * torch.randn(len(ops), generator=generator)).to(device).requires_grad_()
            for edge, ops in self.candidates.items()
        }
        optimizer = torch.optim.SGD(
            supernet.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        steps = o.epochs * math.ceil(len(x) / o.batch_size)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        arch_optimizer = torch.optim.Adam(
            alphas.values(), lr=o.arch_lr, betas=(0.5, 0.999), weight_decay=o.arch_weight_decay
        )
        val_batches = _shuffled_batches(len(xv), o.batch_size, generator, device)
        for epoch in range(1, o.epochs + 1):
            supernet.train()
            loss_sum = torch.zeros((), device=device)
            for idx in torch.randperm(len(x), generator=generator).to(device).split(o.batch_size):
                vidx = next(val_batches)
                if o.order == 2:
                    train, val = (x[idx], y[idx]), (xv[vidx], yv[vidx])
                    xi = scheduler.get_last_lr()[0]
                    grads = unrolled_arch_grads(supernet, alphas, train, val, xi, o.hessian_r)
                else:
                    with autocast(device):
                        logits = supernet(xv[vidx], {e: a.softmax(0) for e, a in alphas.items()})
                    arch_loss = F.cross_entropy(logits.float(), yv[vidx])
                    grads = torch.autograd.grad(arch_loss, list(alphas.values()))
                for alpha, grad in zip(alphas.values(), grads, strict=True):
                    alpha.grad = grad
                arch_optimizer.step()

                weights = {e: a.detach().softmax(0) for e, a in alphas.items()}
                with autocast(device):
                    logits = supernet(x[idx], weights)
                loss = F.cross_entropy(logits.float(), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(supernet.parameters(), o.grad_clip)
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(idx)
            train_loss = loss_sum.item() / len(x)
            check_finite(train_loss, epoch, "darts: the supernet's loss")
            weights = {e: a.detach().softmax(0) for e, a in alphas.items()}
            val_accuracy, val_loss = evaluate(Bound(supernet, weights), xv, yv, device)
            cell = derive(alphas, self.candidates)
            derived_accuracy, _ = self.inherited_score(
                supernet, cell, calibration, (xv, yv), o.batch_size
            )
            report(
                epoch,
                {
                    "train_loss": train_loss,
                    "val_accuracy": val_accuracy,
                    "val_loss": val_loss,
                    "derived_val_accuracy": derived_accuracy,
                    "skip_edges": float(sum(op == "skip_connect" for op in cell.values())),
                },
            )
        self.supernet = supernet
        self.alphas = {edge: alpha.detach().cpu() for edge, alpha in alphas.items()}
        return [self.to_params(derive(self.alphas, self.candidates))]
