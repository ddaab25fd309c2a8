"""PGD attacks on raw audio and/or image inputs, and the accuracy-vs-epsilon curve.

Projected gradient descent (Madry et al. 2018) with an L-inf or an L-2 budget, as Li et
al. use it to study multimodal adversarial robustness: the attacker may perturb one
modality ("audio" or "image") or both. Perturbations live on the raw inputs the model
receives (waveform samples in [-1, 1], pixels in [0, 1]: ``VALID_RANGES``), so every
adversarial example is a valid input. With ``"both"`` each modality gets its own budget
``epsilon`` (the norms are per modality and per example, never pooled).

Each attack starts at a random point of the budget (``random_start``), takes ``steps``
steps of ``step_size`` (default ``2.5 * epsilon / steps``) along the sign of the gradient
(L-inf) or the normalised gradient (L-2) of the cross-entropy, and after each step
projects back onto the budget and clips to the valid range; clipping only shrinks each
coordinate's change, so the budget still holds afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.training import EVAL_BATCH_SIZE, autocast

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
VALID_RANGES: dict[str, tuple[float, float]] = {"audio": (-1.0, 1.0), "image": (0.0, 1.0)}
"""The range of each modality's raw inputs (waveform samples, pixels)."""
ATTACKS: tuple[str, ...] = ("audio", "image", "both")


def _targets(attack: str, modalities: Sequence[str]) -> list[int]:
    """Indices of the inputs (named by ``modalities``) that ``attack`` perturbs."""
    if attack not in ATTACKS:
        raise ValueError(f"attack modality must be one of {', '.join(ATTACKS)}, got {attack!r}")
    wanted = set(modalities) if attack == "both" else {attack}
    targets = [i for i, name in enumerate(modalities) if name in wanted]
    if not targets or (attack == "both" and len(set(modalities)) < 2):
        raise ValueError(
            f"cannot attack {attack!r}: the model's inputs are {', '.join(modalities)}"
        )
    return targets


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norms (batch,) of ``delta``."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _project(delta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    """``delta`` moved into the ``norm`` ball of radius ``epsilon``, per example."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    scale = (epsilon / _norms(delta, norm).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale.view(-1, *([1] * (delta.ndim - 1)))


def _random_start(
    x: torch.Tensor, epsilon: float, norm: str, generator: torch.Generator
) -> torch.Tensor:
    """A random perturbation inside the budget (uniform box for L-inf; a random direction
    at a uniform radius for L-2)."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator) * 2 - 1
        return (noise * epsilon).to(x.device)
    direction = torch.randn(x.shape, generator=generator)
    radius = torch.rand(len(x), generator=generator) * epsilon
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(
        -1, *([1] * (x.ndim - 1))
    )
    return (direction * radius.view(-1, *([1] * (x.ndim - 1)))).to(x.device)


def pgd(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    epsilon: float,
    norm: str = "linf",
    attack: str = "audio",
    modalities: Sequence[str] = ("audio",),
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Adversarial versions of ``inputs`` (one batch) for ``model(*inputs)``'s logits.

    Args:
        model: A classifier; it is put in eval mode and its weights get no gradients.
        inputs: The model's inputs, on its device, each within ``VALID_RANGES`` of its
            modality.
        labels: True classes (batch,).
        epsilon: The budget of each perturbed input, per example, in the ``norm``.
        norm: "linf" or "l2".
        attack: Which modality to perturb: "audio", "image" or "both".
        modalities: The modality of each input, e.g. ("audio", "image").
        steps: Gradient steps; step_size defaults to ``2.5 * epsilon / steps``.
        random_start: Start at a random point of the budget rather than at the input.
        generator: Seeds the random start (CPU generator).

    Returns:
        The inputs, the attacked ones replaced by their adversarial versions.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if epsilon < 0 or steps < 1:
        raise ValueError(f"need epsilon >= 0 and steps >= 1, got {epsilon} and {steps}")
    targets = _targets(attack, modalities)
    inputs = [x.detach() for x in inputs]
    if epsilon == 0:
        return inputs
    step_size = 2.5 * epsilon / steps if step_size is None else step_size
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = inputs[0].device
    model.eval()
    deltas = {}
    for i in targets:
        lo, hi = VALID_RANGES[modalities[i]]
        start = _random_start(inputs[i], epsilon, norm, generator) if random_start else 0.0
        deltas[i] = ((inputs[i] + start).clamp(lo, hi) - inputs[i]).float()
    for _ in range(steps):
        for delta in deltas.values():
            delta.requires_grad_(True)
        current = [inputs[i] + deltas[i] if i in deltas else x for i, x in enumerate(inputs)]
        with torch.enable_grad(), autocast(device):
            logits = model(*current)
        loss = F.cross_entropy(logits.float(), labels)
        grads = torch.autograd.grad(loss, [deltas[i] for i in targets])
        with torch.no_grad():
            for i, grad in zip(targets, grads, strict=True):
                if norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / _norms(grad, "l2").clamp_min(1e-12).view(
                        -1, *([1] * (grad.ndim - 1))
                    )
                delta = _project(deltas[i] + step_size * step, epsilon, norm)
                lo, hi = VALID_RANGES[modalities[i]]
                deltas[i] = (inputs[i] + delta).clamp(lo, hi) - inputs[i]
    return [(inputs[i] + deltas[i]).detach() if i in deltas else x for i, x in enumerate(inputs)]


def robust_accuracy(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    epsilon: float,
    norm: str = "linf",
    attack: str = "audio",
    modalities: Sequence[str] = ("audio",),
    steps: int = 10,
    seed: int = 0,
    batch_size: int = EVAL_BATCH_SIZE,
) -> float:
    """Accuracy of ``model`` under ``pgd`` at ``epsilon``, in batches on the model's device."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, len(labels), batch_size):
        batch = [x[start : start + batch_size].to(device) for x in inputs]
        y = labels[start : start + batch_size].to(device)
        adversarial = pgd(
            model, batch, y, epsilon, norm, attack, modalities, steps, generator=generator
        )
        with torch.no_grad(), autocast(device):
            correct += int((model(*adversarial).argmax(dim=1) == y).sum())
    return correct / max(1, len(labels))


def epsilon_sweep(
    model: nn.Module,
    x: torch.Tensor | Sequence[torch.Tensor],
    y: torch.Tensor,
    epsilons: Sequence[float],
    norm: str = "linf",
    modality: str = "audio",
    modalities: Sequence[str] | None = None,
    steps: int = 10,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Robust accuracy at each epsilon: ``[(epsilon, accuracy), ...]`` in the given order.

    ``x`` is one input tensor (its modality is ``modality``) or the model's inputs as a
    sequence named by ``modalities`` (default ("audio", "image") for two inputs). Every
    epsilon uses the same random start seed, so the curve compares like with like.
    """
    inputs = [x] if isinstance(x, torch.Tensor) else list(x)
    if modalities is None:
        modalities = (modality,) if len(inputs) == 1 else ("audio", "image")
    return [
        (
            float(eps),
            robust_accuracy(model, inputs, y, float(eps), norm, modality, modalities, steps, seed),
        )
        for eps in epsilons
    ]


def parse_epsilons(value: str | Sequence[float]) -> list[float]:
    """Epsilons from a list or a comma-separated string ("0, 0.01, 0.02"); sorted.

    Raises:
        ValueError: An entry is not a number, or is negative.
    """
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(
                f'robust_epsilons must be numbers separated by commas, e.g. "0, 0.01, 0.02"; '
                f"got {value!r}"
            ) from None
    else:
        values = [float(v) for v in value]
    if any(v < 0 for v in values):
        raise ValueError(f"robust_epsilons must be >= 0, got {values}")
    return sorted(values)


ROBUST_PARAMS: dict[str, object] = {
    "robust_epsilons": "",  # comma-separated or a list; empty: no robustness evaluation
    "robust_norm": "linf",  # or "l2"
    "robust_steps": 10,
    "robust_samples": 256,  # attack the first this many val/test examples
}
"""Trainer params of the robustness evaluation, with their defaults."""


def check_robust_params(hp: dict[str, object], modalities: Sequence[str]) -> list[float]:
    """The sorted epsilons of ``hp``; ValueError naming the bad param otherwise."""
    epsilons = parse_epsilons(hp["robust_epsilons"])  # type: ignore[arg-type]
    if epsilons:
        if hp["robust_norm"] not in NORMS:
            raise ValueError(f"robust_norm must be 'linf' or 'l2', got {hp['robust_norm']!r}")
        if int(hp["robust_steps"]) < 1 or int(hp["robust_samples"]) < 1:  # type: ignore[call-overload]
            raise ValueError("robust_steps and robust_samples must be >= 1")
        _targets(str(hp.get("robust_modality", modalities[0])), modalities)
    return epsilons


def robust_metrics(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    epsilons: Sequence[float],
    hp: dict[str, object],
    modalities: Sequence[str],
    prefix: str,
    sweep: bool,
    seed: int = 0,
) -> dict[str, float]:
    """``<prefix>_robust_accuracy`` (at the largest epsilon) and, with ``sweep``, the curve
    as ``<prefix>_robust_eps_<i>`` (the epsilon) and ``<prefix>_robust_acc_eps_<i>``."""
    n = int(hp["robust_samples"])  # type: ignore[call-overload]
    inputs, labels = [x[:n] for x in inputs], labels[:n]
    attack = str(hp.get("robust_modality", modalities[0]))
    norm, steps = str(hp["robust_norm"]), int(hp["robust_steps"])  # type: ignore[call-overload]
    chosen = list(epsilons) if sweep else [max(epsilons)]
    curve = epsilon_sweep(model, inputs, labels, chosen, norm, attack, modalities, steps, seed)
    out = {f"{prefix}_robust_accuracy": curve[-1][1]}
    if sweep:
        for i, (eps, accuracy) in enumerate(curve):
            out |= {f"{prefix}_robust_eps_{i}": eps, f"{prefix}_robust_acc_eps_{i}": accuracy}
    return out
