"""Active learning: the ``Acquisition`` interface, the pool, the oracles and the rounds.

One experiment is one (acquisition, seed): an initial labeled set, then rounds of
train -> compute the model outputs the acquisition needs on the pool -> select a batch ->
the oracle labels it, until the label budget or the round limit. Every random choice is
seeded from (seed, round), so an experiment resumed from its stored rounds continues
exactly as it would have.
"""

from __future__ import annotations

import csv
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Acquisition, Splits

OUTPUTS = ("probs", "mc_probs", "embeddings", "labeled_embeddings", "committee_probs")
"""The model outputs the loop can compute, once per round, for the acquisitions' ``needs``."""

EVAL_BATCH_SIZE = 2048


def round_seed(seed: int, round_: int, salt: int = 0) -> int:
    """The seed of one round's training (salt 0), selection (1) or committee member (2+)."""
    return (seed * 1_000_003 + round_ * 7919 + salt * 104_729) % (2**31)


def initial_indices(y: torch.Tensor, n: int, seed: int, stratified: bool) -> list[int]:
    """The initial labeled set: ``n`` pool indices, at random or class-balanced.

    Stratified takes one example of each class in turn (classes in a seeded order) until
    ``n``; it reads the labels, so only a simulated oracle allows it.
    """
    generator = torch.Generator().manual_seed(round_seed(seed, 0, salt=1))
    order = torch.randperm(len(y), generator=generator)
    if not stratified:
        return order[:n].tolist()
    by_class: dict[int, list[int]] = {}
    for index in order.tolist():
        by_class.setdefault(int(y[index]), []).append(index)
    classes = [list(by_class)[i] for i in torch.randperm(len(by_class), generator=generator)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(len(v) > depth for v in by_class.values()):
        chosen.extend(by_class[c][depth] for c in classes if len(by_class[c]) > depth)
        depth += 1
    return chosen[:n]


# -- oracles -------------------------------------------------------------------------


class Oracle(ABC):
    """Labels pool examples."""

    @abstractmethod
    def label(self, indices: list[int], round_: int) -> list[int]:
        """The class index of each of ``indices`` (pool positions), in order."""


class SimulatedOracle(Oracle):
    """Reveals the held-out labels of the pool (for benchmarking)."""

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y

    def label(self, indices: list[int], round_: int) -> list[int]:
        return [int(self.y[i]) for i in indices]


class FileOracle(Oracle):
    """Writes each query to a file, waits for its labeled copy, and checks it.

    The query ``<folder>/<name>-round<R>.query.<fmt>`` lists ``id`` (the pool position),
    ``source`` (where the item is: a file, or ``file:line``; when the dataset says) and
    ``label`` (empty). A person (or a labeling tool) writes the answer as
    ``<name>-round<R>.labels.<fmt>`` with every queried id and its label: a class name
    or a class index. An answer with unknown, repeated or missing ids or invalid labels
    raises DataError naming the file and line; fix the file and resume the study.
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        label_names: tuple[str, ...],
        fmt: str = "csv",
        poll_seconds: float = 2.0,
        timeout_seconds: float | None = None,
        sources: Sequence[str] = (),
    ) -> None:
        self.folder, self.name, self.fmt = folder, name, fmt
        self.label_names, self.sources = label_names, sources
        self.poll_seconds, self.timeout_seconds = poll_seconds, timeout_seconds

    def paths(self, round_: int) -> tuple[Path, Path]:
        """The query file and the answer file of a round."""
        stem = self.folder / f"{self.name}-round{round_:03d}"
        return Path(f"{stem}.query.{self.fmt}"), Path(f"{stem}.labels.{self.fmt}")

    def label(self, indices: list[int], round_: int) -> list[int]:
        query, answer = self.paths(round_)
        if not answer.exists():
            self._write_query(query, indices)
            self._wait(answer)
        return self._read_answer(answer, indices)

    def _write_query(self, path: Path, indices: list[int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        rows = [
            {"id": i, **({"source": self.sources[i]} if self.sources else {}), "label": None}
            for i in indices
        ]
        with tmp.open("w", newline="") as f:
            if self.fmt == "csv":
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id", "label"])
                writer.writeheader()
                writer.writerows(rows)  # None is written as an empty cell
            else:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(tmp, path)

    def _wait(self, answer: Path) -> None:
        start = time.monotonic()
        while not answer.exists():
            if self.timeout_seconds is not None and time.monotonic() - start > self.timeout_seconds:
                raise DataError(
                    f"no labels at {answer} after {self.timeout_seconds:g} s; label the "
                    "queried items and resume the study with --resume"
                )
            time.sleep(self.poll_seconds)

    def _rows(self, path: Path) -> list[tuple[int, dict[str, Any]]]:
        """(line number, row) of every record of an answer file."""
        text = path.read_text()
        if self.fmt == "csv":
            reader = csv.DictReader(text.splitlines())
            missing = {"id", "label"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(
                    f"{path}:1: the header needs columns 'id' and 'label' (missing "
                    f"{', '.join(sorted(missing))}); keep the query file's header"
                )
            return [(reader.line_num, row) for row in reader]
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f'{path}:{number}: expected an object like {{"id": 3, ...}}')
            rows.append((number, row))
        return rows

    def _read_answer(self, path: Path, indices: list[int]) -> list[int]:
        wanted = set(indices)
        labels: dict[int, int] = {}
        names = {name: i for i, name in enumerate(self.label_names)}
        for number, row in self._rows(path):
            where = f"{path}:{number}"
            try:
                item = int(str(row.get("id", "")).strip())
            except ValueError:
                raise DataError(f"{where}: id {row.get('id')!r} is not an integer") from None
            if item not in wanted:
                raise DataError(
                    f"{where}: id {item} was not queried this round; label only the ids of "
                    "the query file"
                )
            if item in labels:
                raise DataError(f"{where}: id {item} is labeled twice; keep one line")
            labels[item] = self._label_index(row.get("label"), names, where)
        missing = [i for i in indices if i not in labels]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise DataError(
                f"{path}: {len(missing)} queried ids have no label ({shown}); label every "
                "queried id"
            )
        return [labels[i] for i in indices]

    def _label_index(self, value: Any, names: dict[str, int], where: str) -> int:
        text = "" if value is None else str(value).strip()
        if text in names:
            return names[text]
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(self.label_names):
            return int(text)
        if not text:
            raise DataError(f"{where}: the label is empty; fill in the class of this item")
        raise DataError(
            f"{where}: label {text!r} is not a class; use one of "
            f"{', '.join(self.label_names)} (or its index 0-{len(self.label_names) - 1})"
        )


# -- model outputs -------------------------------------------------------------------


def last_linear(model: nn.Module) -> nn.Linear:
    """The layer that makes the logits: ``model.head`` when it is linear, else the last one."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer to take embeddings from")
    return linears[-1]


@torch.inference_mode()
def _forward(
    model: nn.Module, x: torch.Tensor, device: torch.device, embed: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Probabilities (and penultimate features) of ``x`` in large batches, on the CPU."""
    captured: list[torch.Tensor] = []
    hook = (
        last_linear(model).register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
        if embed
        else None
    )
    probs, feats = [], []
    try:
        for start in range(0, len(x), EVAL_BATCH_SIZE):
            logits = model(x[start : start + EVAL_BATCH_SIZE].to(device)).float()
            probs.append(logits.softmax(dim=1).cpu())
            if embed:
                feats.append(captured.pop().float().flatten(1).cpu())
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(probs), (torch.cat(feats) if embed else None)


def has_dropout(model: nn.Module) -> bool:
    """Whether any dropout layer of ``model`` drops something."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def model_outputs(
    model: nn.Module,
    needs: tuple[str, ...],
    x_pool: torch.Tensor,
    x_labeled: torch.Tensor,
    *,
    mc_samples: int,
    seed: int,
    committee: Callable[[], list[nn.Module]] | None = None,
) -> dict[str, torch.Tensor]:
    """Compute each output in ``needs`` once (see ``Acquisition``), batched, on the model's device.

    MC-dropout passes put only the dropout layers in train mode (batch norm stays in
    eval). ``committee`` trains the extra models of a committee when one is needed.
    """
    unknown = set(needs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown model outputs {sorted(unknown)}; known: {OUTPUTS}")
    device = next(model.parameters()).device
    model.eval()
    outputs: dict[str, torch.Tensor] = {}
    embed = "embeddings" in needs
    if {"probs", "embeddings"} & set(needs):
        probs, feats = _forward(model, x_pool, device, embed)
        outputs["probs"] = probs
        if feats is not None:
            outputs["embeddings"] = feats
    if "labeled_embeddings" in needs:
        outputs["labeled_embeddings"] = _forward(model, x_labeled, device, True)[1]
    if "mc_probs" in needs:
        if not has_dropout(model):
            raise ValueError(
                "MC-dropout needs a model with dropout; set the architecture's dropout above 0"
            )
        torch.manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()
        outputs["mc_probs"] = torch.stack(
            [_forward(model, x_pool, device, False)[0] for _ in range(mc_samples)]
        )
        model.eval()
    if "committee_probs" in needs:
        if committee is None:
            raise ValueError("committee_probs needs a way to train committee members")
        members = [model, *committee()]
        outputs["committee_probs"] = torch.stack(
            [_forward(m.eval(), x_pool, device, False)[0] for m in members]
        )
    return {k: outputs[k] for k in needs}


# -- one experiment ------------------------------------------------------------------


@dataclass(frozen=True)
class LoopSettings:
    """How an experiment's rounds go (the ``[al]`` section of a config)."""

    initial: int = 20
    stratified: bool = False
    batch_size: int = 10
    budget: int | None = None  # total labels, the initial ones included
    rounds: int | None = None  # query rounds after the initial one
    warm_start: bool = False
    mc_samples: int = 20
    committee_size: int = 3


def round_sizes(settings: LoopSettings, pool_size: int) -> list[int]:
    """The number of labels after each round (round 0: the initial set)."""
    limit = min(pool_size, settings.budget or pool_size)
    sizes = [min(settings.initial, limit)]
    while sizes[-1] < limit and (settings.rounds is None or len(sizes) <= settings.rounds):
        sizes.append(min(sizes[-1] + settings.batch_size, limit))
    return sizes


def aulc(n_labeled: list[int], values: list[float]) -> float:
    """Area under the learning curve by the trapezoid rule, over the label range.

    Normalized by the range, so it is the curve's mean height (an accuracy in [0, 1]);
    comparable only between curves over the same label counts. A single point: its value.
    """
    if len(values) == 1:
        return float(values[0])
    area = sum(
        (n_labeled[i + 1] - n_labeled[i]) * (values[i] + values[i + 1]) / 2
        for i in range(len(values) - 1)
    )
    return area / (n_labeled[-1] - n_labeled[0])


Train = Callable[[list[int], list[int], int, nn.Module | None], tuple[nn.Module, dict]]
"""train(labeled indices, their labels, seed, model to continue or None) -> (model, metrics)."""


def select_batch(
    acquisition: Acquisition,
    model: nn.Module,
    x_pool: torch.Tensor,
    labeled_set: tuple[list[int], list[int]],
    k: int,
    settings: LoopSettings,
    seed_round: tuple[int, int],
    train: Train,
) -> list[int]:
    """Pool positions of the next batch: ``acquisition`` on the unlabeled part of the pool.

    ``labeled_set`` is the labeled pool positions and their labels; ``train`` trains the
    extra committee members when the acquisition needs a committee.
    """
    labeled, labels = labeled_set
    seed, round_ = seed_round

    def committee() -> list[nn.Module]:
        return [
            train(labeled, labels, round_seed(seed, round_, salt=2 + m), None)[0]
            for m in range(settings.committee_size - 1)
        ]

    taken = torch.zeros(len(x_pool), dtype=torch.bool)
    taken[labeled] = True
    unlabeled = (~taken).nonzero().flatten()
    outputs = model_outputs(
        model,
        acquisition.needs,
        x_pool[unlabeled],
        x_pool[labeled],
        mc_samples=settings.mc_samples,
        seed=round_seed(seed, round_, salt=1),
        committee=committee,
    )
    rng = torch.Generator().manual_seed(round_seed(seed, round_, salt=1))
    picked = acquisition.select(outputs, k, rng)
    expected = min(k, len(unlabeled))
    if (
        picked.dim() != 1
        or len(picked) != expected
        or len(set(picked.tolist())) != expected
        or (expected and not 0 <= int(picked.min()) <= int(picked.max()) < len(unlabeled))
    ):
        raise ValueError(
            f"acquisition '{acquisition.name}' returned {picked.tolist()[:20]}; expected "
            f"{expected} unique indices in [0, {len(unlabeled)})"
        )
    return unlabeled[picked].tolist()


def run_experiment(
    splits: Splits,
    acquisition: Acquisition,
    oracle: Oracle,
    settings: LoopSettings,
    seed: int,
    train: Train,
    report: Callable[[dict[str, Any]], None],
    done: list[dict[str, Any]] | None = None,
) -> None:
    """Run one experiment's rounds, calling ``report`` after each with its metrics.

    Args:
        splits: ``train`` is the pool (its labels are used only by a simulated oracle and
            stratified initial sampling); ``test`` measures every round.
        acquisition: Selects each round's batch.
        oracle: Labels the initial set and each batch.
        settings: Sizes, warm start, MC samples, committee size.
        seed: The experiment's seed (initial set, training, selection tie-breaks).
        train: Trains a model on the labeled examples (see ``Train``).
        report: Receives, per round, ``round``, ``n_labeled``, the metrics of ``train``,
            ``queried`` and ``labels`` (the round's new ids and their labels),
            ``select_seconds`` and, on the last round, ``finished``.
        done: Rounds stored by an earlier run (their ``queried`` and ``labels``): the
            labeled set is rebuilt from them and the experiment continues after them.
    """
    x_pool, y_pool = splits.train
    sizes = round_sizes(settings, len(y_pool))
    labeled: list[int] = []
    labels: list[int] = []
    model: nn.Module | None = None
    done = done or []
    for round_, n_after in enumerate(sizes):
        select_seconds = 0.0
        if round_ < len(done):
            queried, answers = done[round_]["queried"], done[round_]["labels"]
        else:
            if round_ == 0:
                queried = initial_indices(y_pool, n_after, seed, settings.stratified)
            else:
                start = time.perf_counter()
                queried = select_batch(
                    acquisition,
                    model,
                    x_pool,
                    (labeled, labels),
                    n_after - len(labeled),
                    settings,
                    (seed, round_),
                    train,
                )
                select_seconds = time.perf_counter() - start
            answers = oracle.label(queried, round_)
        labeled += queried
        labels += answers
        replaying = round_ < len(done) - 1
        if replaying and not settings.warm_start:
            continue  # only the last stored round's model is needed to go on
        model, metrics = train(
            labeled, labels, round_seed(seed, round_), model if settings.warm_start else None
        )
        if round_ < len(done):
            continue
        report(
            {
                **metrics,
                "round": round_,
                "n_labeled": len(labeled),
                "queried": queried,
                "labels": answers,
                "select_seconds": select_seconds,
                **({"finished": 1} if round_ == len(sizes) - 1 else {}),
            }
        )
