"""Trainers, one per task: the training loop, device and AMP choice, metric reporting."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from autoplat.core.interfaces import Splits

Report = Callable[[int, dict[str, float]], None]
Trainer = Callable[[nn.Module, "Splits", dict[str, Any], Report, int], dict[str, float]]

TRAINER_PARAMS: dict[str, object] = {
    "lr": 1e-3,
    "weight_decay": 0.05,
    "batch_size": 64,
    "epochs": 10,
    "warmup_epochs": 0,
}
"""Hyperparameters the trainer reads from a trial's params, with their defaults.

Every other key of a trial's params belongs to the architecture.
"""

EVAL_BATCH_SIZE = 1024


class TrialFailed(Exception):
    """A trial cannot go on; the message says why (e.g. "loss became NaN at epoch 3")."""


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s state_dict (on the CPU) to ``path`` atomically and durably: to a
    temporary name beside it, fsynced, then renamed; a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_tensors(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)


def save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """``torch.save`` a dict of tensors to ``path`` and fsync it (no Python objects in it,
    so ``load_checkpoint`` reads it with ``weights_only=True``)."""
    with open(path, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())


def sync_folder(folder: Path) -> None:
    """fsync ``folder`` so that a rename in it survives a power loss (where supported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict written by ``save_checkpoint`` (tensors only: ``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def select_device() -> torch.device:
    """CUDA when this process sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing on other devices."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def start_training(
    model: nn.Module, hp: dict[str, Any], seed: int
) -> tuple[int, int, torch.Generator, torch.device]:
    """What every trainer does first: ``hp``'s epochs and batch size (TrialFailed below 1),
    torch seeded, a seeded generator for the batch order, ``model`` moved to the device.

    Returns:
        (epochs, batch_size, generator, device)
    """
    epochs, batch_size = int(hp["epochs"]), int(hp["batch_size"])
    if epochs < 1 or batch_size < 1:
        raise TrialFailed(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = select_device()
    model.to(device)
    return epochs, batch_size, generator, device


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    n_train: int,
    batch_size: int,
    generator: torch.Generator,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    epoch: int,
    what: str = "loss",
) -> float:
    """One pass over ``n_train`` examples in a seeded random order: each batch's
    ``batch_loss(indices)`` (its mean loss, computed under autocast) is minimized with
    ``optimizer``, ``scheduler`` stepping per batch.

    Returns:
        The mean training loss.

    Raises:
        TrialFailed: It is NaN or infinite ("<what> became NaN at epoch <epoch>").
    """
    device = next(model.parameters()).device
    model.train()
    loss_sum = torch.zeros((), device=device)
    order = torch.randperm(n_train, generator=generator).to(device)
    for start in range(0, n_train, batch_size):
        idx = order[start : start + batch_size]
        with autocast(device):
            loss = batch_loss(idx).float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(idx)
    mean = loss_sum.item() / n_train
    check_finite(mean, epoch, what)
    return mean


def check_finite(loss: float, epoch: int, what: str = "loss") -> None:
    """TrialFailed("<what> became NaN at epoch <epoch>") when ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        bad = "NaN" if math.isnan(loss) else "infinite"
        raise TrialFailed(f"{what} became {bad} at epoch {epoch}")


def warmup_cosine(
    optimizer: torch.optim.Optimizer, hp: dict[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch schedule: linear warmup over ``hp["warmup_epochs"]``, then cosine decay
    to zero at the end of ``hp["epochs"]``."""
    total = int(hp["epochs"]) * steps_per_epoch
    warmup = min(int(hp["warmup_epochs"]) * steps_per_epoch, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, total))


def _lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warmup over ``warmup_steps``, then cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``, in large batches."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, len(x), EVAL_BATCH_SIZE):
        xb = x[start : start + EVAL_BATCH_SIZE].to(device, non_blocking=True)
        yb = y[start : start + EVAL_BATCH_SIZE].to(device, non_blocking=True)
        with autocast(device):
            logits = model(xb)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(dim=1) == yb).sum()
    n = max(1, len(x))
    return correct.item() / n, loss_sum.item() / n


def train_classification(
    model: nn.Module,
    splits: Splits,
    params: dict[str, Any],
    report: Report,
    seed: int,
) -> dict[str, float]:
    """Train a classifier with AdamW and a cosine schedule, reporting after every epoch.

    Args:
        model: Maps a batch of inputs to logits of shape (batch, num_classes).
        splits: Train, val and test tensors; labels are class indices.
        params: The trial's params; the keys of ``TRAINER_PARAMS`` are read, others ignored.
        report: Called as ``report(epoch, metrics)`` after each epoch (from 1) with
            train_loss, val_accuracy and val_loss; the last call adds test_accuracy and
            test_loss.
        seed: Seeds torch (dropout) and the batch order.

    Returns:
        The metrics of the last report.

    Raises:
        TrialFailed: The training loss became NaN or infinite, or epochs or batch_size
            is below 1.
    """
    hp = {key: params.get(key, default) for key, default in TRAINER_PARAMS.items()}
    epochs, batch_size, generator, device = start_training(model, hp, seed)
    x_train, y_train = (t.to(device) for t in splits.train)
    n_train = len(x_train)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"])
    )
    scheduler = warmup_cosine(optimizer, hp, math.ceil(n_train / batch_size))

    metrics: dict[str, float] = {}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x_train[idx]).float(), y_train[idx])

    for epoch in range(1, epochs + 1):
        train_loss = train_epoch(
            model, optimizer, scheduler, n_train, batch_size, generator, batch_loss,
            epoch,
        )  # fmt: skip
        val_accuracy, val_loss = evaluate(model, *splits.val, device)
        metrics = {"train_loss": train_loss, "val_accuracy": val_accuracy, "val_loss": val_loss}
        if epoch == epochs:
            test_accuracy, test_loss = evaluate(model, *splits.test, device)
            metrics |= {"test_accuracy": test_accuracy, "test_loss": test_loss}
        report(epoch, metrics)
    return metrics


TRAINERS: dict[str, Trainer] = {"classification": train_classification}
