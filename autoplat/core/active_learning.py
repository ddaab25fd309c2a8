"""Active learning: the ``Acquisition`` interface, the pool, the oracles (and what a
person sees of a query: thumbnails, contact sheets, text) and the rounds.

One experiment is one (acquisition, seed): an initial labeled set, then rounds of
train -> compute the model outputs the acquisition needs on the pool -> select a batch ->
the oracle labels it, until the label budget or the round limit. Every random choice is
seeded from (seed, round), so an experiment resumed from its stored rounds continues
exactly as it would have.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from autoplat.core.errors import DataError
from autoplat.core.interfaces import Acquisition, Splits

if TYPE_CHECKING:
    from PIL import Image

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


# -- what a person sees of the queried items -------------------------------------------
# ``pool_preview(splits)`` gives an image pool (inputs (N, C, H, W), array datasets such as
# digits included) an ``ImagePreview``: one PNG thumbnail per queried id and one contact
# sheet per round with each id printed under its image; a text pool with a tokenizer gets
# a ``TextPreview``, whose text goes into the query file.

THUMBNAIL = 96  # pixels: small images are enlarged (nearest) to about this, large ones shrunk
SHEET_COLUMNS = 10
CAPTION = 14  # pixels under each image of the contact sheet for its id


class ImagePreview:
    """Thumbnails and a contact sheet of pool images (a tensor (N, C, H, W))."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def image(self, index: int) -> Image.Image:
        """Pool item ``index`` as a grey or RGB thumbnail (values scaled to 0-255)."""
        from PIL import Image

        pixels = self.x[index].detach().float().cpu().numpy()
        pixels = pixels[:3] if len(pixels) >= 3 else pixels[:1]
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0 or high > 1:  # not in [0, 1]: stretch to it
            pixels = (pixels - low) / (high - low or 1.0)
        data = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
        image = Image.fromarray(data[0] if len(data) == 1 else data.transpose(1, 2, 0))
        side = max(image.size)
        if side < THUMBNAIL:
            scale = max(1, THUMBNAIL // side)
            return image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        return image

    def write(self, indices: list[int], folder: Path, stem: str) -> tuple[Path, dict[int, str]]:
        """Write ``<stem>.images/<id>.png`` per id and the sheet ``<stem>.sheet.png`` in
        ``folder``; returns the sheet's path and each id's thumbnail path, relative to
        ``folder``."""
        images = {i: self.image(i) for i in indices}
        thumbnails = folder / f"{stem}.images"
        thumbnails.mkdir(parents=True, exist_ok=True)
        for i, image in images.items():
            save_png(image, thumbnails / f"{i}.png")
        sheet = folder / f"{stem}.sheet.png"
        save_png(contact_sheet(images), sheet)
        return sheet, {i: f"{thumbnails.name}/{i}.png" for i in indices}


def contact_sheet(images: dict[int, Image.Image]) -> Image.Image:
    """The images in a grid of up to ``SHEET_COLUMNS`` columns, in order, each id under it."""
    from PIL import Image, ImageDraw

    width = max(image.width for image in images.values()) + 8
    height = max(image.height for image in images.values()) + CAPTION + 6
    columns = min(SHEET_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (index, image) in enumerate(images.items()):
        left, top = (n % columns) * width + 4, (n // columns) * height + 4
        sheet.paste(image.convert("RGB"), (left, top))
        draw.text((left, top + image.height + 2), f"id {index}", fill="black")
    return sheet


def save_png(image: Image.Image, path: Path) -> None:
    """Save ``image`` as PNG to ``path`` through a temporary name."""
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


class TextPreview:
    """The text of pool items whose inputs are token ids of a ``tokenizers`` tokenizer."""

    def __init__(self, tokens: torch.Tensor, tokenizer_json: str) -> None:
        self.tokens, self.tokenizer_json = tokens, tokenizer_json

    def texts(self, indices: list[int]) -> list[str]:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.tokenizer_json)
        rows = [self.tokens[i].tolist() for i in indices]
        return tokenizer.decode_batch(rows, skip_special_tokens=True)


def pool_preview(splits: Splits) -> ImagePreview | TextPreview | None:
    """How to show the pool (``splits.train``) to a person; None when it is neither images
    nor tokenized text."""
    x, spec = splits.train[0], splits.spec
    if spec.modality == "image" and x.dim() == 4:
        return ImagePreview(x)
    if spec.modality == "text" and spec.tokenizer and x.dim() == 2:
        return TextPreview(x, spec.tokenizer)
    return None


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


class LabelsTimeout(DataError):
    """No labels came for a query within the file oracle's timeout."""


class FileOracle(Oracle):
    """Writes each query to a file, waits for its labels, and checks them.

    The query ``<folder>/<name>-round<R>.query.<fmt>`` lists ``id`` (the pool position),
    ``source`` (where the item is: a file, or ``file:line``; when the dataset says),
    ``text`` (text pools), ``image`` (image pools: the item's thumbnail; the round's
    contact sheet ``<name>-round<R>.sheet.png`` shows every item with its id) and ``label``
    (empty). A person fills the label column of the query file in place, or writes
    ``<name>-round<R>.labels.<fmt>`` with every queried id and its label: a class name or
    a class index. A labels file with unknown, repeated or missing ids or invalid labels
    raises DataError naming the file and line (fix it and resume); a query file filled in
    place is taken once every label is filled and valid, and its problems are reported
    (``notify``) while it waits. ``notify`` receives what the oracle waits for: the
    round, the number of ids, the query, labels and contact-sheet paths and a status line.
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
        preview: ImagePreview | TextPreview | None = None,
        notify: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.folder, self.name, self.fmt = folder.absolute(), name, fmt
        self.label_names, self.sources, self.preview = label_names, sources, preview
        self.poll_seconds, self.timeout_seconds = poll_seconds, timeout_seconds
        self.notify = notify or (lambda info: None)

    def paths(self, round_: int) -> tuple[Path, Path]:
        """The query file and the answer file of a round."""
        stem = self.folder / self.stem(round_)
        return Path(f"{stem}.query.{self.fmt}"), Path(f"{stem}.labels.{self.fmt}")

    def stem(self, round_: int) -> str:
        return f"{self.name}-round{round_:03d}"

    def label(self, indices: list[int], round_: int) -> list[int]:
        query, answer = self.paths(round_)
        if answer.exists():
            return self._read_answer(answer, indices)
        sheet = self._write_query(query, indices, round_)
        wanted = {
            "round": round_,
            "ids": len(indices),
            "query": str(query),
            "labels": str(answer),
            "images": str(sheet) if sheet else None,
        }
        return self._wait(query, answer, indices, wanted)

    def _write_query(self, path: Path, indices: list[int], round_: int) -> Path | None:
        """Write the query (kept when it already asks for these ids, maybe half filled in)
        and the round's images; returns the contact sheet's path, if any."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = [{"id": i} for i in indices]
        if self.sources:
            for row in rows:
                row["source"] = self.sources[row["id"]]
        sheet = None
        if isinstance(self.preview, TextPreview):
            for row, text in zip(rows, self.preview.texts(indices), strict=True):
                row["text"] = text
        elif isinstance(self.preview, ImagePreview):
            sheet, thumbnails = self.preview.write(indices, self.folder, self.stem(round_))
            for row in rows:
                row["image"] = thumbnails[row["id"]]
        for row in rows:
            row["label"] = None
        if path.exists() and self._kept(path, indices):
            return sheet
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            if self.fmt == "csv":
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id", "label"])
                writer.writeheader()
                writer.writerows(rows)  # None is written as an empty cell
            else:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(tmp, path)
        return sheet

    def _kept(self, path: Path, indices: list[int]) -> bool:
        """Whether an existing query file asks for ``indices`` (then it stays as it is, with
        what a person filled in); DataError when it asks for others and holds labels."""
        try:
            rows = [row for _, row in self._rows(path)]
        except DataError:
            rows = []
        if [str(row.get("id", "")).strip() for row in rows] == [str(i) for i in indices]:
            return True
        if any(_text(row.get("label")) for row in rows):
            raise DataError(
                f"{path}: holds labels for other ids than this round queries (from an earlier "
                "study?); move the file away and resume"
            )
        return False

    def _wait(self, query: Path, answer: Path, indices: list[int], wanted: dict) -> list[int]:
        """Wait for the labels file or a filled-in query file (``wanted``: what to report)."""
        start, seen, status = time.monotonic(), None, ""
        while not answer.exists():
            stamp = _stamp(query)
            if stamp != seen:
                seen = stamp
                labels, now = self._in_place(query, indices)
                if labels is not None:
                    return labels
                if now != status:
                    status = now
                    self.notify({**wanted, "status": status})
            waited = time.monotonic() - start
            if self.timeout_seconds is not None and waited > self.timeout_seconds:
                raise LabelsTimeout(
                    f"no labels for round {wanted['round']} after {self.timeout_seconds:g} s "
                    f"([oracle] timeout_seconds): fill the label column of {query} (or write "
                    f"{answer}), then resume"
                )
            time.sleep(self.poll_seconds)
        return self._read_answer(answer, indices)

    def _in_place(self, query: Path, indices: list[int]) -> tuple[list[int] | None, str]:
        """The labels a person filled into the query file, once all are there and valid;
        else None and how far they got (or what is wrong)."""
        if not query.exists():
            return None, f"{query.name} is gone; write the labels file"
        try:
            rows = self._rows(query)
            filled = sum(1 for _, row in rows if _text(row.get("label")))
            if filled < len(indices):
                return None, f"{filled} of {len(indices)} labeled"
            return self._labels(query, rows, indices), ""
        except DataError as exc:
            return None, str(exc)

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
        return self._labels(path, self._rows(path), indices)

    def _labels(
        self, path: Path, rows: list[tuple[int, dict[str, Any]]], indices: list[int]
    ) -> list[int]:
        """The label of each of ``indices`` from ``rows`` of ``path``; DataError names the
        file and line of a bad one."""
        wanted = set(indices)
        labels: dict[int, int] = {}
        names = {name: i for i, name in enumerate(self.label_names)}
        for number, row in rows:
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
        text = _text(value)
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


def _text(value: Any) -> str:
    """A cell of a query or labels file as text ("" for an empty cell or null)."""
    return "" if value is None else str(value).strip()


def _stamp(path: Path) -> tuple[int, int] | None:
    """When ``path`` last changed and its size (None: it does not exist)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


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
        report: Receives, per round, ``round`` (of ``rounds``), ``n_labeled``, the metrics
            of ``train``, ``queried`` and ``labels`` (the round's new ids and their
            labels), ``select_seconds`` and, on the last round, ``finished``.
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
                "rounds": len(sizes),
                "n_labeled": len(labeled),
                "queried": queried,
                "labels": answers,
                "select_seconds": select_seconds,
                **({"finished": 1} if round_ == len(sizes) - 1 else {}),
            }
        )
