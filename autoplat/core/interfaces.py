"""Every plugin kind's contract in one place: the small interfaces plugins implement
(Architecture, Dataset, Benchmark, Strategy, Acquisition, Scorer, Embedder,
LanguageModel) and the values they exchange."""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from autoplat.core.space import Dimension, FloatRange, SearchSpace

if TYPE_CHECKING:
    import numpy as np
    import torch

Direction = Literal["maximize", "minimize"]


class Options(BaseModel):
    """Base for a plugin's options; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data."""

    task: str  # "classification", ...
    modality: str  # "image", "text", "audio", ...
    input_shape: tuple[int, ...]  # one example, e.g. (1, 8, 8) for C, H, W
    num_classes: int = 0
    label_names: tuple[str, ...] = ()  # class names by index; empty: "0".."num_classes-1"
    # per-feature (mean, std) the dataset standardized raw inputs with; predict reapplies it
    input_scaling: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    vocab_size: int = 0  # text inputs: token ids are in [0, vocab_size)
    text_length: int = 0  # text inputs: tokens per caption (padded)
    tokenizer: str = ""  # text inputs: the `tokenizers` JSON that made the ids (export ships it)
    sample_rate: int = 0  # audio inputs: samples per second (0: not said)


@dataclass
class Splits:
    """Train/val/test tensors of one dataset and its spec: (inputs, labels) for
    classification; a task's own tuple otherwise (e.g. images, token ids, labels)."""

    train: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    spec: DataSpec
    # where each train example comes from ("file", "file:line"), so a person can find an
    # item to label (the file oracle of active learning); empty for generated data
    train_sources: tuple[str, ...] = ()


@dataclass
class OnnxPart:
    """One graph of a trained model that ``platform export`` writes as its own ONNX file.

    ``module(*inputs)`` must return one tensor, batch first; every input and the output get
    a dynamic batch axis. ``inputs`` are the test split's inputs of this part (export checks
    onnxruntime against torch on all of them). ``modality`` tells ``platform predict`` how
    to read raw inputs ("image", "text", "video", "audio", ...; "" = the spec's);
    ``output`` names the output ("logits": class scores, "embedding": a vector per example,
    or e.g. "noise", "image"). ``preprocessing`` adds keys to the preprocessing stored in
    the model (e.g. an audio part's sample_rate); ``metadata`` adds metadata keys.
    """

    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...] = ("input",)
    modality: str = ""
    output: str = "logits"
    preprocessing: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Range:
    """The values a numeric param may take (see ``Architecture.param_ranges``): an int
    (``kind`` int) or any number between ``low`` and ``high`` (None: unbounded), each bound
    included unless ``open_low`` / ``open_high``; ``note`` says why a bound is there."""

    kind: type[int] | type[float]
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    note: str = ""

    def __str__(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left = "(" if self.open_low else "["
            right = ")" if self.open_high else "]"
            what += f" in {left}{self.low}, {self.high}{right}"
        elif self.low is not None:
            what += f" {'>' if self.open_low else '>='} {self.low}"
        elif self.high is not None:
            what += f" {'<' if self.open_high else '<='} {self.high}"
        return f"{what} ({self.note})" if self.note else what

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a finite number of this kind within the bounds."""
        number = isinstance(value, Integral if self.kind is int else Real)  # numpy's too
        if isinstance(value, bool) or not number or not math.isfinite(value):
            return False
        low, high = self.low, self.high
        above = low is None or value > low or (value == low and not self.open_low)
        below = high is None or value < high or (value == high and not self.open_high)
        return above and below

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of this range ("must be ..., got ..."), or None."""
        return None if self.contains(value) else f"must be {self}, got {value!r}"

    def dimension_problem(self, dim: Dimension) -> str | None:
        """Why some value of a search dimension is out of this range (every choice of a
        list; a range's low and high), or None."""
        if self.kind is int and isinstance(dim, FloatRange):
            return f"must be {self}, got a float range [{dim.low}, {dim.high}]"
        for value in dim.edges():
            if (problem := self.problem(value)) is not None:
                return problem
        return None


def ints(low: int, high: int | None = None, note: str = "") -> Range:
    """An int param in [low, high]."""
    return Range(int, low, high, note=note)


def floats(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Range:
    """A number param between low and high."""
    return Range(float, low, high, open_low, open_high)


@dataclass(frozen=True)
class Choices(Range):
    """A categorical param: one of ``values`` (checked at config time against every
    choice a [space] list gives, as a Range is against its ends)."""

    kind: type = str
    values: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)

    def contains(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)


def one_of(*values: Any) -> Choices:
    """A categorical param taking one of ``values``."""
    return Choices(values=values)


ALLOCATION = "the cap prevents absurd allocations"
SIZE = ints(1, 65_536, ALLOCATION)  # widths, channels, embedding sizes
LAYERS = ints(1, 1024, ALLOCATION)  # depths, layers, heads
RATIO = ints(1, 64, ALLOCATION)  # MLP expansion ratios
PATCH = ints(1, 1024)
DROPOUT = floats(0, 1, open_high=True)
PROBABILITY = floats(0, 1)
POSITIVE = floats(0, open_low=True)
NON_NEGATIVE = floats(0)
EPOCHS = ints(1, 100_000, "the cap catches a typo that would train for ever")

TRAINER_RANGES: dict[str, Range] = {
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "batch_size": ints(1, 1_048_576, ALLOCATION),
    "epochs": EPOCHS,
    "warmup_epochs": ints(0, 100_000),
}
"""The values of ``training.TRAINER_PARAMS`` every architecture's trainer reads."""


class Dataset(ABC):
    """A named dataset; ``load`` returns fixed splits for a seed."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    modality: ClassVar[str]
    Options: ClassVar[type[Options]] = Options

    @abstractmethod
    def load(self, options: Options, seed: int) -> Splits:
        """Load the data and split it; the same seed gives the same split."""

    def kind(self, options: Options) -> tuple[str, tuple[str, ...]]:
        """The modality and tasks this dataset serves with ``options`` (default: the class's)."""
        return self.modality, self.tasks


class Architecture(ABC):
    """A model family: a task, the modalities it accepts, a default space, and ``build``.

    ``train`` runs the task's trainer (``autoplat.core.training.TRAINERS[task]``); a family
    with its own objective overrides it, lists the extra trainer params it reads (and
    their defaults) in ``trainer_params`` and the metrics it reports in ``metrics``
    (name -> "maximize"/"minimize"), so a study may rank by them.
    """

    name: ClassVar[str]
    task: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]]
    default_space: ClassVar[str]  # name of a registered search space
    defaults: ClassVar[dict[str, Any]] = {}  # params a trial may leave out
    trainer_params: ClassVar[dict[str, Any]] = {}  # beyond training.TRAINER_PARAMS
    metrics: ClassVar[dict[str, str]] = {}  # beyond config.METRICS
    metric_params: ClassVar[dict[str, str]] = {}  # metric -> the param every trial must set
    # param -> the values it may take (its own and trainer params; beyond TRAINER_RANGES);
    # a param without one is not range-checked
    param_ranges: ClassVar[dict[str, Range]] = {}

    @abstractmethod
    def build(self, params: dict[str, Any], spec: DataSpec) -> torch.nn.Module:
        """Build a model for these hyperparameters and data."""

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Return why these params cannot build a model (for ``spec``'s data), or None."""
        return None

    def ranges(self) -> dict[str, Range]:
        """Every range-checked param: the common trainer's, then ``param_ranges``."""
        return {**TRAINER_RANGES, **self.param_ranges}

    def range_problem(self, params: dict[str, Any]) -> str | None:
        """A ``check_params`` reason naming the first value of ``params`` out of its range
        ("mlp: hidden must be ..."); None when all are in range."""
        ranges = self.ranges()
        for key, value in params.items():
            if key in ranges and (problem := ranges[key].problem(value)) is not None:
                return f"{self.name}: {key} {problem}"
        return None

    def split_params(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A trial's params as (model params, trainer params with defaults filled in)."""
        from autoplat.core.training import TRAINER_PARAMS

        trainer = {**TRAINER_PARAMS, **self.trainer_params}
        model = {k: v for k, v in params.items() if k not in trainer}
        return model, {**trainer, **{k: v for k, v in params.items() if k in trainer}}

    def train(
        self,
        model: torch.nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Callable[[int, dict[str, float]], None],
        seed: int,
    ) -> dict[str, float]:
        """Train ``model`` on ``splits``, calling ``report(epoch, metrics)`` each epoch."""
        from autoplat.core.training import TRAINERS

        return TRAINERS[self.task](model, splits, params, report, seed)

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """The graphs ``platform export`` writes for a trained ``model`` (in eval mode), by
        part name: one part writes ``--out`` itself, several write ``out.<part>.onnx``.

        Default: the whole model on the test inputs ``splits.test[0]``, giving logits. A
        family with several towers returns one part per tower (e.g. "image" and "text").
        """
        return {"model": OnnxPart(model, (splits.test[0],))}

    def unknown_params(self, params: dict[str, Any]) -> str | None:
        """A ``check_params`` reason naming params that are neither in ``defaults`` nor
        trainer params, with those that are; None when every param is known."""
        unknown = sorted(set(params) - set(self.defaults))
        if not unknown:
            return None
        known = ", ".join([*self.defaults, *self.trainer_params])
        return f"{self.name}: unknown params {', '.join(unknown)}; known: {known}"

    def resolve_params(self, params: dict[str, Any], spec: DataSpec) -> dict[str, Any]:
        """``defaults`` overlaid with ``params``; ValueError when ``check_params`` objects."""
        reason = self.check_params(params, spec)
        if reason is not None:
            raise ValueError(reason)
        return {**self.defaults, **params}


class Benchmark(ABC):
    """A tabular benchmark: a trial looks its result up instead of training a model.

    ``metrics`` names the study metrics (``[study].metric``) that ``evaluate`` returns;
    it also returns ``simulated_seconds``, what training the model would have cost.
    """

    name: ClassVar[str]
    default_space: ClassVar[str]  # name of a registered search space
    metrics: ClassVar[tuple[str, ...]] = ("val_accuracy",)
    Options: ClassVar[type[Options]] = Options

    def check(self, options: Options) -> None:  # noqa: B027 - an optional hook
        """Raise ``PluginError`` when the benchmark cannot run (e.g. its table is missing)."""

    def check_params(self, params: dict[str, Any]) -> str | None:
        """Return why ``evaluate`` cannot look these params up, or None."""
        return None

    @abstractmethod
    def evaluate(self, params: dict[str, Any], options: Options, seed: int) -> dict[str, float]:
        """The metrics of ``params``; ``seed`` picks among recorded runs where there are several.

        Accuracies are fractions in [0, 1]; ``simulated_seconds`` is the simulated cost.
        """


class SearchStrategy(ABC):
    """What every search strategy shares: built from the space, the direction, a seed and
    its options, then ``setup`` builds its own state."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    default_scheduler: ClassVar[str] = "fifo"  # the [scheduler] name used when none is given

    def __init__(
        self,
        space: SearchSpace,
        direction: Direction = "maximize",
        seed: int = 0,
        options: Options | None = None,
        directions: tuple[Direction, ...] | None = None,
    ) -> None:
        self.space = space
        self.direction = direction
        self.directions = directions or (direction,)  # one per objective; the first: direction
        self.seed = seed
        self.options = options if options is not None else self.Options()
        self.rng = random.Random(seed)
        self.setup()

    def setup(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Build the strategy's own state (called at the end of ``__init__``)."""


class Strategy(SearchStrategy):
    """A search strategy with an ask/tell interface.

    Constructed with the space, the direction and a seed: the same seed and the same
    tells give the same proposals. ``tell(params, None)`` means the trial failed; a trial
    a scheduler stopped early reaches ``prune`` (by default the same as a failure), and
    every intermediate value of a running trial reaches ``report``.
    """

    @abstractmethod
    def ask(self) -> dict[str, Any] | None:
        """Propose the next params, or None when the strategy has nothing left."""

    @abstractmethod
    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Report the result of params proposed by ``ask`` (None: failed, or stopped early)."""

    def report(self, params: dict[str, Any], step: int, value: float) -> None:  # noqa: B027
        """An intermediate value (at epoch ``step``) of the running trial of ``params``."""

    def prune(self, params: dict[str, Any]) -> None:
        """The trial of ``params`` was stopped early by the scheduler (default: as failed)."""
        self.tell(params, None)

    def replay(self, history: Iterable[tuple[dict[str, Any], float | None]]) -> None:
        """Bring a fresh strategy to where it was after these trials (used by resume)."""
        for params, value in history:
            self.ask()
            self.tell(params, value)

    def tell_values(self, params: dict[str, Any], values: list[float] | None) -> None:
        """A finished trial's value of every objective (in ``directions`` order), or None.

        A multi-objective strategy overrides this (and ``replay_values``); by default the
        first objective is told, so any strategy can run a multi-objective study.
        """
        self.tell(params, None if values is None else values[0])

    def replay_values(self, history: Iterable[tuple[dict[str, Any], list[float] | None]]) -> None:
        """``replay`` with every objective's value."""
        self.replay((params, None if values is None else values[0]) for params, values in history)

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats ``b`` in this direction."""
        return a > b if self.direction == "maximize" else a < b


class OneShotStrategy(SearchStrategy):
    """A one-shot strategy: trains a weight-sharing supernet inside one trial.

    Constructed like a ``Strategy``, plus ``architecture=``: the study's architecture,
    whose supernet it trains (a ``SupernetArchitecture``). ``search`` returns the
    architectures it derives; the study then trains each one from scratch as an ordinary
    trial. Registered through ``register_strategies`` like ask/tell strategies.
    """

    def __init__(
        self,
        space: SearchSpace,
        direction: Direction = "maximize",
        seed: int = 0,
        options: Options | None = None,
        directions: tuple[Direction, ...] | None = None,
        *,
        architecture: Architecture,
    ) -> None:
        self.architecture = architecture
        super().__init__(space, direction, seed, options, directions)

    @abstractmethod
    def search(
        self, splits: Splits, report: Callable[[int, dict[str, float]], None]
    ) -> list[dict[str, Any]]:
        """Train the supernet on ``splits.train``, select on ``splits.val`` (never ``test``).

        Args:
            splits: The dataset's splits.
            report: Called as ``report(epoch, metrics)`` after every supernet epoch.

        Returns:
            Distinct derived architectures as full params of the space, best first.
        """


# -- active learning ------------------------------------------------------------------


class Acquisition(ABC):
    """Chooses which pool examples to label next from model outputs on the pool.

    The loop computes each output named in ``needs`` once per round. Shapes, for a pool
    of N unlabeled examples, L labeled ones and C classes:

    - ``"probs"``: (N, C) class probabilities (model in eval mode).
    - ``"mc_probs"``: (S, N, C) probabilities from S MC-dropout passes.
    - ``"embeddings"``: (N, D) penultimate-layer features (the input of the last linear
      layer); with ``"probs"`` this is all BADGE's gradient embeddings need.
    - ``"labeled_embeddings"``: (L, D) the same features of the labeled set.
    - ``"committee_probs"``: (M, N, C) probabilities of M independently trained models.
    """

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]

    @abstractmethod
    def select(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Return up to ``k`` unique pool indices (int64, 1-D), best first.

        Fewer than ``k`` only when the pool is smaller. Deterministic for a given
        ``rng`` state; ties are broken with ``rng``, never by index order.
        """


# -- curation ---------------------------------------------------------------------------


@dataclass
class Chunk:
    """A slice of the corpus, in file order.

    ``ids`` are the records' global row numbers (0-based over the whole input), so a
    result that depends on a record (a sampling draw, a cluster) must key on them, not
    on the position in the chunk. ``text`` and ``images`` are filled when the input has
    them; ``embeddings`` (float32, L2-normalized rows) when an embedder is configured
    and a scorer needs them.
    """

    ids: np.ndarray
    text: list[str] | None = None
    images: list[str] | None = None
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class CurationContext:
    """What a scorer may use besides its chunks.

    ``embed(items)`` embeds texts (or image paths) with the configured embedder and
    raises ``ConfigError`` when none is configured; ``read_texts(path, column)`` yields
    lists of strings from another record file (an evaluation set, seed queries), in
    chunks, with the same error reporting as the input; ``work_dir`` is a private
    folder for the scorer's large intermediate files.
    """

    embed: Callable[[list[str]], np.ndarray]
    read_texts: Callable[[str | Path, str], Iterator[list[str]]]
    work_dir: Path
    seed: int


class Scorer(ABC):
    """Maps records to score columns and, when it filters, a ``keep`` mask.

    Lifecycle: ``__init__(options, seed)``, ``setup(context)``; when ``two_pass``:
    ``fit(chunk)`` for every chunk, then ``finish_fit()``; then ``score(chunk)`` for
    every chunk, in order. ``summary()`` is stored with the run. After ``finish_fit``
    the runner saves ``state()`` (as JSON and .npz, never pickle) so an interrupted run
    resumes at the scoring pass with ``load_state``, which must check what it reads
    (``state_array``, ``state_value``): the file may have been edited. Memory must not
    grow with the corpus beyond what the algorithm needs (a count per metadata entry, one
    float per record, an index).
    """

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ("text",)  # of "text", "image", "embedding"
    two_pass: ClassVar[bool] = False
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options, seed: int = 0) -> None:
        self.options = options
        self.seed = seed

    def setup(self, context: CurationContext) -> None:  # noqa: B027 - optional hook
        """Load resources (metadata, a language model); raise ``AutoplatError`` if missing."""

    def fit(self, chunk: Chunk) -> None:  # noqa: B027 - optional hook
        """First pass: see one chunk (only called when ``two_pass``)."""

    def finish_fit(self) -> None:  # noqa: B027 - optional hook
        """After the first pass: derive thresholds, components, clusters."""

    @abstractmethod
    def score(self, chunk: Chunk) -> dict[str, np.ndarray]:
        """Columns of one value per record of ``chunk``; ``keep`` (bool) when filtering."""

    def state(self) -> Any:
        """What ``finish_fit`` derived: dicts (str keys), lists, numbers, strings, None and
        numpy arrays (not of objects); restored with ``load_state``."""
        return None

    def load_state(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Restore what ``state`` returned (tuples come back as lists); raise ``ValueError``,
        ``KeyError`` or ``TypeError`` when it does not hold what ``state`` returns."""

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers describing the run (thresholds, counts, clusters), from what
        ``setup`` and ``finish_fit`` derived (scoring may have resumed half-way)."""
        return {}


class Embedder(ABC):
    """Turns texts (or image paths) into L2-normalized float32 vectors."""

    name: ClassVar[str]
    modality: ClassVar[str] = "text"  # or "image"
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options, seed: int = 0) -> None:
        self.options = options
        self.seed = seed

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of each vector."""

    @abstractmethod
    def embed(self, items: list[str]) -> np.ndarray:
        """An ``(len(items), dim)`` float32 array with unit-norm rows."""


class LanguageModel(ABC):
    """A reference language model: the log-likelihood of lines of text (text quality)."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options, seed: int = 0) -> None:
        self.options = options
        self.seed = seed

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load or train the model; raise ``AutoplatError`` when it cannot."""

    @abstractmethod
    def log_likelihood(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per line: the total natural-log likelihood and the number of tokens scored.

        Perplexity over a set of lines is ``exp(-sum(ll) / sum(tokens))``.
        """


class SupernetArchitecture(Architecture):
    """An architecture a one-shot strategy (SPOS, DARTS) can search with one supernet.

    The searched dimensions of its space are *choices*: each takes one of a few named ops.
    A supernet holds a module for every op of every choice and shares the rest, and is
    called as ``supernet(x, path)``: ``path`` maps every choice to an op name (one path:
    the network ``build`` makes for those params) or to a weight vector over its ops, in
    the order of ``supernet_choices`` (a mixture, as DARTS runs it). The strategy trains
    the supernet; ``inherit`` and ``path_cost`` let it score and bound single paths.
    """

    @abstractmethod
    def supernet_choices(self, space: SearchSpace) -> dict[str, tuple[str, ...]]:
        """The ops each choice of ``space`` picks from, in order, repeats dropped (a fixed
        choice: its one op). The other dimensions of ``space`` are not choices.

        Raises:
            ValueError: ``space`` is not one the supernet can search (the reason and how to
                fix it, shown to the user as a config error).
        """

    @abstractmethod
    def build_supernet(
        self, choices: dict[str, tuple[str, ...]], params: dict[str, Any], spec: DataSpec
    ) -> torch.nn.Module:
        """A fresh supernet over ``choices`` for ``spec``'s data; ``params`` are the fixed
        params of the space (e.g. a width; ``defaults`` fill in the rest)."""

    @abstractmethod
    def inherit(self, supernet: torch.nn.Module, path: dict[str, str]) -> torch.nn.Module:
        """The network ``build`` makes for ``path``, holding copies of the supernet's weights
        of that path (BatchNorm statistics included) on the supernet's device: in eval mode
        it computes ``supernet(x, path)``, and changing it leaves the supernet as it was."""

    @abstractmethod
    def path_cost(
        self, choices: dict[str, tuple[str, ...]], params: dict[str, Any], spec: DataSpec
    ) -> Callable[[dict[str, str]], tuple[int, int]]:
        """A function giving the parameter count and FLOPs (multiply-adds) of the network
        ``build`` makes for a path of ``choices`` with the space's fixed ``params``."""
