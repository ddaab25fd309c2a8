"""Conformance kit for plugin authors: reusable pytest contracts and a registration helper.

Subclass a contract in your tests and override its fixture::

    import pytest
    from autoplat.testing import StrategyContract

    class TestMyStrategy(StrategyContract):
        @pytest.fixture
        def strategy_cls(self):
            return MyStrategy

Every test of the contract then runs against ``MyStrategy``. The contracts are
``StrategyContract``, ``AcquisitionContract``, ``ScorerContract``,
``ArchitectureContract`` and ``DatasetContract``; ``registered_plugin`` adds a plugin
to the process registry for the length of a ``with`` block.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from autoplat.core.curation import bare_context, run_scorer
from autoplat.core.interfaces import (
    Acquisition,
    Architecture,
    Chunk,
    CurationContext,
    Dataset,
    DataSpec,
    Options,
    Scorer,
    Splits,
    Strategy,
)
from autoplat.core.registry import PluginInfo, Registry, get_registry
from autoplat.core.space import Categorical, FloatRange, IntRange, SearchSpace

__all__ = [
    "AcquisitionContract",
    "ArchitectureContract",
    "DatasetContract",
    "ScorerContract",
    "StrategyContract",
    "corner",
    "fake_outputs",
    "registered_plugin",
]


PLATFORM = [sys.executable, "-m", "autoplat.cli"]  # the `platform` command of this Python


def run_platform(
    *args: str, timeout: float = 600, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run ``platform ARGS...`` in a subprocess as a user would; output captured as text."""
    return subprocess.run(
        [*PLATFORM, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONFAULTHANDLER": "1", **os.environ, **env},  # a crash prints its stacks
        timeout=timeout,
    )


# -- registering a plugin for one test ---------------------------------------------
@contextmanager
def registered_plugin(
    plugin: ModuleType | object, name: str, *, registry: Registry | None = None, check: bool = True
) -> Iterator[PluginInfo]:
    """Register ``plugin`` (a module or object with hookimpls) as ``name``, then remove it.

    Args:
        plugin: What an entry point would load.
        name: The plugin's name, as an entry-point name would be.
        registry: Defaults to the process registry (``get_registry()``).
        check: Fail the test when the plugin reports load errors.

    Yields:
        The plugin's load status.
    """
    registry = registry if registry is not None else get_registry()
    if name in registry.plugins:
        raise ValueError(
            f"plugin '{name}' is already loaded (installed plugins autoload unless "
            "AUTOPLAT_BUILTIN_ONLY=1 is set before the registry is first used); pick another name"
        )
    info = registry.add_plugin(plugin, name)
    try:
        if check and info.errors:
            pytest.fail(f"plugin '{name}' failed to load: {'; '.join(info.errors)}")
        yield info
    finally:
        registry.remove_plugin(name)


# -- search strategies -------------------------------------------------------------
def _objective(params: dict[str, Any]) -> float:
    """A deterministic value for any params (so seeded runs can be compared)."""
    total = 0.0
    for key, value in sorted(params.items()):
        number = float(value) if isinstance(value, int | float) else float(len(str(value)))
        total += math.sin(number + len(key))
    return total


class StrategyContract:
    """The ask/tell contract of a search ``Strategy``.

    Override ``strategy_cls``; override ``space`` when the strategy supports only some
    kinds of dimensions (e.g. a grid needs enumerable ones) and ``options`` to test
    non-default options.
    """

    trials = 24

    @pytest.fixture
    def strategy_cls(self) -> type[Strategy]:
        pytest.fail("override the 'strategy_cls' fixture with your Strategy subclass")

    @pytest.fixture
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(
            {
                "depth": [1, 2, 3],
                "act": ["relu", "gelu"],
                "width": {"low": 16, "high": 64, "step": 16},
                "lr": {"low": 1e-4, "high": 1e-1, "log": True},
                "epochs": 3,
            }
        )

    @pytest.fixture
    def options(self, strategy_cls: type[Strategy]) -> Options:
        return strategy_cls.Options()

    @pytest.fixture
    def make(
        self, strategy_cls: type[Strategy], space: SearchSpace, options: Options
    ) -> Callable[..., Strategy]:
        def make(seed: int = 0, direction: str = "maximize") -> Strategy:
            return strategy_cls(space, direction, seed, options)

        return make

    def run(
        self, strategy: Strategy, fail: Callable[[int], bool] = lambda i: False
    ) -> list[tuple[dict[str, Any], float | None]]:
        """Ask and tell up to ``trials`` times; ``fail(i)`` marks trial i as failed."""
        history: list[tuple[dict[str, Any], float | None]] = []
        for i in range(self.trials):
            params = strategy.ask()
            if params is None:
                break
            value = None if fail(i) else _objective(params)
            history.append((dict(params), value))
            strategy.tell(params, value)
        return history

    def test_name_and_default_options(self, strategy_cls: type[Strategy]) -> None:
        assert isinstance(strategy_cls.name, str) and strategy_cls.name
        assert issubclass(strategy_cls, Strategy)
        strategy_cls.Options()  # a config without [strategy] options must work

    @pytest.mark.parametrize("direction", ["maximize", "minimize"])
    def test_ask_tell_respects_the_space(
        self, make: Callable[..., Strategy], space: SearchSpace, direction: str
    ) -> None:
        history = self.run(make(direction=direction))
        assert history, "ask() returned None before the first trial"
        for params, _ in history:
            assert space.contains(params), f"{params} is outside the space {space.dims}"

    def test_tell_does_not_change_proposals(self, make: Callable[..., Strategy]) -> None:
        strategy = make()
        for _ in range(self.trials):
            params = strategy.ask()
            if params is None:
                break
            before = dict(params)
            strategy.tell(params, _objective(params))
            assert params == before, "tell() modified the params it was given"

    def test_same_seed_same_proposals(self, make: Callable[..., Strategy]) -> None:
        assert self.run(make(seed=7)) == self.run(make(seed=7))

    def test_failed_trials(self, make: Callable[..., Strategy], space: SearchSpace) -> None:
        history = self.run(make(), fail=lambda i: i % 3 == 1)
        history += self.run(make(seed=1), fail=lambda i: True)
        assert all(space.contains(params) for params, _ in history)

    def test_replay(self, make: Callable[..., Strategy], space: SearchSpace) -> None:
        history = self.run(make(seed=3), fail=lambda i: i == 2)
        resumed = []
        for _ in range(2):
            strategy = make(seed=3)
            strategy.replay(history)
            proposals = [strategy.ask() for _ in range(3)]
            resumed.append(proposals)
            assert all(p is None or space.contains(p) for p in proposals)
        assert resumed[0] == resumed[1], "replaying the same history must be deterministic"


# -- acquisition functions -----------------------------------------------------------
def fake_outputs(
    needs: tuple[str, ...], pool: int, seed: int = 0, classes: int = 5, tied: bool = False
) -> dict[str, torch.Tensor]:
    """Random model outputs for ``needs`` (see ``Acquisition``); ``tied``: all rows equal."""
    gen = torch.Generator().manual_seed(seed)
    rows = 1 if tied else pool

    def expand(t: torch.Tensor) -> torch.Tensor:
        return t.expand(*t.shape[:-2], pool, t.shape[-1]).clone()

    makers = {
        "probs": lambda: torch.randn(rows, classes, generator=gen).softmax(-1),
        "logits": lambda: torch.randn(rows, classes, generator=gen),
        "mc_probs": lambda: torch.randn(8, rows, classes, generator=gen).softmax(-1),
        "embeddings": lambda: torch.randn(rows, 16, generator=gen),
        "committee_probs": lambda: torch.randn(3, rows, classes, generator=gen).softmax(-1),
    }
    fixed = {"labeled_embeddings": lambda: torch.randn(10, 16, generator=gen)}  # not per row
    unknown = [need for need in needs if need not in makers and need not in fixed]
    if unknown:
        pytest.fail(f"no fake outputs for {unknown}: override the 'outputs' fixture")
    return {need: fixed[need]() if need in fixed else expand(makers[need]()) for need in needs}


class AcquisitionContract:
    """The contract of an ``Acquisition``: k unique in-range indices, seeded, small pools.

    Override ``acquisition``; override ``make_outputs`` when it needs outputs that
    ``fake_outputs`` cannot make.
    """

    pool = 50

    @pytest.fixture
    def acquisition(self) -> Acquisition:
        pytest.fail("override the 'acquisition' fixture with an instance of your Acquisition")

    @pytest.fixture
    def make_outputs(self, acquisition: Acquisition) -> Callable[..., dict[str, torch.Tensor]]:
        return lambda pool, seed=0, tied=False: fake_outputs(
            acquisition.needs, pool, seed, tied=tied
        )

    @staticmethod
    def select(acquisition: Acquisition, outputs: dict, k: int, seed: int = 0) -> torch.Tensor:
        return acquisition.select(outputs, k, torch.Generator().manual_seed(seed))

    def test_name_and_needs(self, acquisition: Acquisition) -> None:
        assert isinstance(acquisition, Acquisition)
        assert isinstance(acquisition.name, str) and acquisition.name
        assert acquisition.needs and all(isinstance(n, str) for n in acquisition.needs)

    @pytest.mark.parametrize("k", [0, 1, 7, 50])
    def test_returns_k_unique_indices_in_range(
        self, acquisition: Acquisition, make_outputs: Callable, k: int
    ) -> None:
        picked = self.select(acquisition, make_outputs(self.pool), k)
        assert picked.dtype == torch.int64 and picked.dim() == 1
        assert len(picked) == k
        assert len(set(picked.tolist())) == k, f"duplicate indices in {picked.tolist()}"
        assert all(0 <= i < self.pool for i in picked.tolist())

    def test_deterministic_under_a_seed(
        self, acquisition: Acquisition, make_outputs: Callable
    ) -> None:
        outputs = make_outputs(self.pool)
        first = self.select(acquisition, outputs, 10, seed=4)
        assert torch.equal(first, self.select(acquisition, outputs, 10, seed=4))

    def test_does_not_modify_outputs(
        self, acquisition: Acquisition, make_outputs: Callable
    ) -> None:
        outputs = make_outputs(self.pool)
        before = {key: value.clone() for key, value in outputs.items()}
        self.select(acquisition, outputs, 5)
        assert all(torch.equal(outputs[key], before[key]) for key in before)

    def test_pool_smaller_than_k(self, acquisition: Acquisition, make_outputs: Callable) -> None:
        picked = self.select(acquisition, make_outputs(3), 10)
        assert sorted(picked.tolist()) == [0, 1, 2]

    def test_ties_broken_by_the_generator(
        self, acquisition: Acquisition, make_outputs: Callable
    ) -> None:
        outputs = make_outputs(self.pool, tied=True)
        picks = [tuple(self.select(acquisition, outputs, 5, seed).tolist()) for seed in range(8)]
        assert len(set(picks)) > 1, "equal scores must be broken by the generator, not by index"


# -- scorers ---------------------------------------------------------------------------
TEXTS = [
    "a photo of a dog",
    "",
    "Sunset over the harbour, long exposure, 2019",
    "click here",
    "IMG_0042.JPG",
    "two cats sleeping on a red sofa next to a window",
    "logo",
    "The quick brown fox jumps over the lazy dog.",
]


def chunked(records: list[str], size: int, start: int = 0) -> list[Chunk]:
    """Text records as chunks of ``size`` with global ids from ``start``."""
    return [
        Chunk(ids=np.arange(start + i, start + i + len(part)), text=part)
        for i in range(0, len(records), size)
        for part in [records[i : i + size]]
    ]


def embedding_context(work_dir: Path) -> CurationContext:
    """A curation context for embedding scorers: the ``hashing`` embedder, record files
    read with ``RecordFile``, work files under ``work_dir/work``."""
    from autoplat.core.records import RecordFile
    from autoplat.plugins.embedders import Hashing

    work = work_dir / "work"
    work.mkdir(exist_ok=True)
    return CurationContext(
        embed=Hashing().embed,
        read_texts=lambda path, column: RecordFile(path, column).texts(),
        work_dir=work,
        seed=0,
    )


def embedded_chunks(x: np.ndarray, size: int) -> list[Chunk]:
    """Embedding rows ``x`` as chunks of ``size`` with global ids."""
    return [
        Chunk(ids=np.arange(i, min(i + size, len(x))), embeddings=x[i : i + size])
        for i in range(0, len(x), size)
    ]


def write_texts(path: Path, texts: list[str]) -> Path:
    """A Parquet record file with one column, ``text``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), path)
    return path


class ScorerContract:
    """The contract of a ``Scorer``: one value per record, chunking does not matter,
    the same seed gives the same columns.

    Override ``make_scorer`` (a factory: a fresh instance per call); override ``texts``
    when the scorer needs other records, and ``context`` when it needs an embedder (its
    ``embed`` fills each chunk's embeddings).
    """

    @pytest.fixture
    def make_scorer(self) -> Callable[[], Scorer]:
        pytest.fail("override the 'make_scorer' fixture: a callable returning a new Scorer")

    @pytest.fixture
    def texts(self) -> list[str]:
        return [TEXTS[i % len(TEXTS)] * (1 + i // 8) for i in range(40)]

    @pytest.fixture
    def context(self, tmp_path: Path) -> CurationContext:
        return bare_context(tmp_path)

    def test_name(self, make_scorer: Callable[[], Scorer]) -> None:
        scorer = make_scorer()
        assert isinstance(scorer, Scorer)
        assert isinstance(scorer.name, str) and scorer.name
        assert set(scorer.needs) <= {"text", "image", "embedding"}

    def test_one_value_per_record(self, make_scorer, texts, context) -> None:
        columns = run_scorer(make_scorer(), chunked(texts, len(texts)), context)
        assert columns, "score() returned no columns"
        for name, values in columns.items():
            assert len(values) == len(texts), name
            if name == "keep":
                assert values.dtype == bool
            elif values.dtype.kind == "f":
                assert np.isfinite(values).all(), name

    @pytest.mark.parametrize("size", [1, 7, 13])
    def test_stable_under_chunking(self, make_scorer, texts, context, size: int) -> None:
        whole = run_scorer(make_scorer(), chunked(texts, len(texts)), context)
        parts = run_scorer(make_scorer(), chunked(texts, size), context)
        assert whole.keys() == parts.keys()
        for name in whole:
            np.testing.assert_allclose(parts[name], whole[name], atol=1e-6, err_msg=name)

    def test_empty_chunk(self, make_scorer, texts, context) -> None:
        chunks = chunked(texts, len(texts))
        columns = run_scorer(make_scorer(), [*chunks, Chunk(np.arange(0), text=[])], context)
        assert all(len(values) == len(texts) for values in columns.values())

    def test_same_seed_same_columns(self, make_scorer, texts, context) -> None:
        first = run_scorer(make_scorer(), chunked(texts, 9), context)
        second = run_scorer(make_scorer(), chunked(texts, 9), context)
        for name in first:
            np.testing.assert_array_equal(first[name], second[name], err_msg=name)

    def test_state_survives_its_files(self, make_scorer, texts, context, tmp_path) -> None:
        """A two-pass scorer's ``state()`` is plain data (saved as JSON and .npz, never
        pickle), and a fresh scorer given it back scores the same."""
        from autoplat.core.curation import load_states, save_states

        scorer = make_scorer()
        if not scorer.two_pass:
            return
        chunks = chunked(texts, 9)
        whole = run_scorer(scorer, chunks, context)  # fills the chunks' embeddings
        folder = tmp_path / "state"
        folder.mkdir()
        save_states(folder, {scorer.name: scorer.state()})
        fresh = make_scorer()
        fresh.setup(context)
        fresh.load_state(load_states(folder)[scorer.name])
        parts = [fresh.score(chunk) for chunk in chunks]
        for name, values in whole.items():
            got = np.concatenate([part[name] for part in parts])
            np.testing.assert_allclose(got, values, atol=1e-6, err_msg=name)


# -- architectures -----------------------------------------------------------------------
def corner(space: SearchSpace, high: bool) -> dict[str, Any]:
    """The space's low (or high) corner: each dimension at its min (or max) value."""
    params: dict[str, Any] = {}
    for key, dim in space.dims.items():
        if isinstance(dim, IntRange | FloatRange):
            params[key] = dim.high if high else dim.low
        elif isinstance(dim, Categorical):
            choices = list(dim.choices)
            if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
                choices.sort()
            params[key] = choices[-1] if high else choices[0]
        else:
            params[key] = dim.value
    return params


class ArchitectureContract:
    """The contract of an ``Architecture``: its space's corners build, train and export.

    Override ``architecture``; override ``data_spec`` for data other than 8x8 grey
    images in 10 classes, and ``space`` to test a smaller space than the default one
    (which is looked up in the process registry).
    """

    batch = 4

    @pytest.fixture
    def architecture(self) -> Architecture:
        pytest.fail("override the 'architecture' fixture with an instance of your Architecture")

    @pytest.fixture
    def data_spec(self) -> DataSpec:
        return DataSpec("classification", "image", (1, 8, 8), 10)

    @pytest.fixture
    def space(self, architecture: Architecture) -> SearchSpace:
        return get_registry().get("search_spaces", architecture.default_space).load()

    @pytest.fixture(params=["low", "high"])
    def model(
        self,
        request: pytest.FixtureRequest,
        architecture: Architecture,
        space: SearchSpace,
        data_spec: DataSpec,
    ) -> torch.nn.Module:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        params, _ = architecture.split_params(corner(space, high=request.param == "high"))
        reason = architecture.check_params(params)
        if reason is not None:
            pytest.skip(f"the {request.param} corner cannot build: {reason}")
        return architecture.build(params, data_spec)

    @pytest.fixture
    def example(self, data_spec: DataSpec) -> torch.Tensor:
        return torch.randn(
            self.batch, *data_spec.input_shape, generator=torch.Generator().manual_seed(0)
        )

    def test_name_and_task(self, architecture: Architecture, data_spec: DataSpec) -> None:
        assert isinstance(architecture, Architecture)
        assert isinstance(architecture.name, str) and architecture.name
        assert data_spec.modality in architecture.modalities
        assert data_spec.task == architecture.task

    def test_forward_backward(
        self, model: torch.nn.Module, example: torch.Tensor, data_spec: DataSpec
    ) -> None:
        model.train()
        out = model(example)
        if data_spec.task == "classification":
            assert out.shape == (self.batch, data_spec.num_classes)
        out.float().square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), "every gradient is zero"

    def test_onnx_export_matches(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        import onnxruntime

        model.eval()
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not gone
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, input_names=["x"], output_names=["y"]
            )
        session = onnxruntime.InferenceSession(
            buffer.getvalue(), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(["y"], {"x": example.numpy()})
        with torch.no_grad():
            want = model(example).float().numpy()
        assert got.shape == want.shape
        assert abs(got - want).max() <= 1e-4


# -- datasets ------------------------------------------------------------------------
def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


class DatasetContract:
    """The contract of a ``Dataset``: seeded, disjoint splits that match the spec.

    Override ``dataset`` (and ``options`` to test non-default options). The disjointness
    check compares examples byte for byte, so it assumes the data has no duplicates.
    """

    @pytest.fixture
    def dataset(self) -> Dataset:
        pytest.fail("override the 'dataset' fixture with an instance of your Dataset")

    @pytest.fixture
    def options(self, dataset: Dataset) -> Options:
        return dataset.Options()

    @pytest.fixture
    def splits(self, dataset: Dataset, options: Options) -> Splits:
        return dataset.load(options, 0)

    def test_name_and_options(self, dataset: Dataset) -> None:
        assert isinstance(dataset, Dataset)
        assert isinstance(dataset.name, str) and dataset.name
        required = [k for k, f in dataset.Options.model_fields.items() if f.is_required()]
        if not required:
            dataset.Options()  # a config without [dataset] options must work
            return
        # options without defaults (e.g. a path) must be refused by name when missing
        with pytest.raises(ValidationError, match=required[0]):
            dataset.Options()

    def test_split_deterministic_by_seed(
        self, dataset: Dataset, options: Options, splits: Splits
    ) -> None:
        again = dataset.load(options, 0)
        for name in ("train", "val", "test"):
            for a, b in zip(getattr(splits, name), getattr(again, name), strict=True):
                assert torch.equal(a, b), f"the {name} split differs between loads with seed 0"

    def test_splits_disjoint(self, splits: Splits) -> None:
        train, val, test = (_rows(part[0]) for part in (splits.train, splits.val, splits.test))
        assert not train & val and not train & test and not val & test

    def test_spec_matches_tensors(self, dataset: Dataset, options: Options, splits: Splits) -> None:
        spec = splits.spec
        modality, tasks = dataset.kind(options)
        assert spec.task in tasks and spec.modality == modality
        for name in ("train", "val", "test"):
            x, y = getattr(splits, name)
            assert len(x) == len(y) > 0, f"the {name} split is empty or misaligned"
            assert tuple(x.shape[1:]) == spec.input_shape
            assert x.is_floating_point() and torch.isfinite(x).all()
            if spec.task == "classification":
                assert y.dtype == torch.int64
                assert int(y.min()) >= 0 and int(y.max()) < spec.num_classes
        if splits.train_sources:  # optional; when given, one per train example
            assert len(splits.train_sources) == len(splits.train[0])
