"""Config files: TOML -> validated pydantic models -> resolved plugins, with friendly errors.

Every error names the file, the key (and its line when found) and how to fix it.
"""

from __future__ import annotations

import difflib
import inspect
import json
import random
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoplat.core.errors import AutoplatError, ConfigError
from autoplat.core.interfaces import (
    Architecture,
    Benchmark,
    Dataset,
    DataSpec,
    OneShotStrategy,
    Options,
    Strategy,
)
from autoplat.core.registry import Registry
from autoplat.core.space import (
    DATASET_PREFIX,
    Dimension,
    SearchSpace,
    SpaceError,
    split_dataset_params,
)

Loc = tuple[str | int, ...]
METRICS = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    "train_loss": "minimize",
    "model_params": "minimize",  # the model's parameter count, reported by every trial
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginSection(BaseModel):
    """A section naming a plugin; other keys are that plugin's options."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StudySection(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    trials: int = Field(12, ge=1, le=100_000)
    seed: int = Field(0, ge=0)
    metric: str = "val_accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    # several metrics to optimize at once (the first is ``metric``); show prints the Pareto front
    objectives: list[str] | None = Field(None, min_length=2)
    storage: str | None = None
    checkpoints: Literal["best", "all", "none"] = "best"  # which trials keep their weights
    checkpoint_dir: str | None = None  # default: checkpoints/ next to a SQLite store
    # Ray Tune's per-run folder: default ray/ next to a SQLite store, else runs/ray
    workdir: str | None = None
    keep_ray_files: bool = False  # keep Ray's per-run folder after the study ends


class ArchitectureSection(Section):
    name: str
    space: str | None = None


class BenchmarkSection(PluginSection):
    """``[benchmark]``: a tabular benchmark, its options, and optionally another space."""

    space: str | None = None


class StrategySection(PluginSection):
    name: str = "random"


class SchedulerSection(Section):
    # hyperband_bohb: HyperBand as BOHB runs it (Ray's HyperBandForBOHB)
    name: Literal["fifo", "asha", "hyperband", "hyperband_bohb", "median"] = "fifo"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    min_samples_required: int = Field(3, ge=1)


class ResourcesSection(Section):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    # retries of a trial whose worker died (Ray's FailureConfig); a trial that raised or
    # produced NaN is never retried
    max_failures: int = Field(0, ge=0, le=100)


class BaselineSection(Section):
    """``[baseline]``: a scikit-learn model fitted on the study's own split, shown as a row
    of its leaderboard (autoplat/core/baseline.py)."""

    model: Literal["logistic-regression", "svc", "random-forest", "most-frequent"]
    C: float = Field(1.0, gt=0)  # logistic-regression, svc: inverse regularization strength
    max_iter: int = Field(1000, ge=1, le=1_000_000)  # logistic-regression
    n_estimators: int = Field(100, ge=1, le=10_000)  # random-forest: trees


class PluginsSection(Section):
    """``[plugins] modules``: local plugin modules to load (files relative to the config
    file, or importable module names), as ``--plugin`` does."""

    modules: list[str] = Field(default_factory=list)


class Config(Section):
    """A whole config: a model and data (``[architecture]`` + ``[dataset]``) or a
    ``[benchmark]``, the search, and how to run it."""

    study: StudySection
    plugins: PluginsSection = Field(default_factory=PluginsSection)
    architecture: ArchitectureSection | None = None
    dataset: PluginSection | None = None
    benchmark: BenchmarkSection | None = None
    space: dict[str, Any] = Field(default_factory=dict)
    strategy: StrategySection = Field(default_factory=StrategySection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    baseline: BaselineSection | None = None


@dataclass
class Resolved:
    """A validated config with its plugins looked up and its search space built.

    A model study has ``architecture``, ``dataset`` and ``dataset_options``; a benchmark
    study has ``benchmark`` and ``benchmark_options`` instead (the others are None).
    """

    path: Path
    config: Config
    raw: dict[str, Any]
    strategy_cls: type[Strategy] | type[OneShotStrategy]
    strategy_options: Options
    space: SearchSpace
    architecture: Architecture | None = None
    dataset: Dataset | None = None
    dataset_options: Options | None = None
    benchmark: Benchmark | None = None
    benchmark_options: Options | None = None

    @property
    def direction(self) -> str:
        return (
            self.config.study.direction or metrics_of(self.architecture)[self.config.study.metric]
        )

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, direction) of every objective; just the study metric when there is one."""
        known = metrics_of(self.architecture)
        names = self.config.study.objectives or [self.config.study.metric]
        return [(self.config.study.metric, self.direction)] + [(m, known[m]) for m in names[1:]]

    def make_strategy(self) -> Strategy | OneShotStrategy:
        args = (self.space, self.direction, self.config.study.seed, self.strategy_options)
        directions = tuple(direction for _, direction in self.objectives)
        if issubclass(self.strategy_cls, OneShotStrategy):  # it trains the arch's supernet
            return self.strategy_cls(*args, directions=directions, architecture=self.architecture)
        if "directions" in inspect.signature(self.strategy_cls).parameters:
            return self.strategy_cls(*args, directions=directions)
        strategy = self.strategy_cls(*args)  # a plugin's __init__ without directions:
        strategy.directions = directions  # it is told the first objective (tell_values)
        return strategy


def line_of(text: str, loc: Loc) -> int | None:
    """The 1-based line of a dotted key (``("strategy", "population")``) in TOML text."""
    keys = [str(k) for k in loc if not isinstance(k, int)]
    if not keys:
        return None
    table, key = ".".join(keys[:-1]), keys[-1]
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if current == ".".join(keys):
                return number
            continue
        match = re.match(r'^["\']?([A-Za-z0-9_.-]+)["\']?\s*=', stripped)
        if match and current == table and match.group(1) == key:
            return number
    return None


class _Source:
    """A config file's path and text, for locating keys in error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def error(self, loc: Loc, message: str) -> ConfigError:
        dotted = ".".join(str(k) for k in loc)
        line = line_of(self.text, loc)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}")

    def lookup(self, registry: Registry, kind: str, name: str, loc: Loc) -> Any:
        """The registered plugin ``name`` of ``kind``; a ConfigError at ``loc`` if unknown."""
        try:
            return registry.get(kind, name)
        except AutoplatError as exc:
            raise self.error(loc, str(exc)) from None


def _validation_message(
    exc: ValidationError, model: type[BaseModel], source: _Source, prefix: Loc = ()
) -> ConfigError:
    """One clear message for the first problem pydantic found."""
    # a misspelt key also makes its real name "missing": report the misspelling first
    err = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    loc = prefix + tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        fields = _fields_at(model, tuple(err["loc"][:-1]))
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        allowed = ", ".join(fields) or "none"
        message = f"unknown key{hint} Allowed keys here: {allowed}"
    elif err["type"] == "missing":
        message = "is required but missing; add it"
    else:
        reason = err["msg"].removeprefix("Value error, ")  # a field_validator's own words
        message = f"{reason} (got {err.get('input')!r})"
    return source.error(loc, message)


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    for key in loc:
        field = model.model_fields.get(str(key))
        annotation = field.annotation if field else None
        # an optional section is ``Section | None``: look through the union
        models = [
            a
            for a in (annotation, *get_args(annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if not models:
            return []
        model = models[0]
    return list(model.model_fields)


def _plugin_options(
    options_cls: type[Options], raw: dict[str, Any], source: _Source, section: str
) -> Options:
    try:
        return options_cls.model_validate(raw)
    except ValidationError as exc:
        raise _validation_message(exc, options_cls, source, (section,)) from None


DICT_PATH = Path("<config dict>")  # where errors of a config given as a dict point
_IN_MEMORY: dict[Path, dict[str, Any]] = {}  # configs given as dicts (the Python API)


@contextmanager
def config_dict(raw: dict[str, Any]) -> Iterator[Path]:
    """Make a dict with a TOML file's structure readable by ``read_config`` for a block,
    under the path it yields (errors name it and the key). Values must be JSON types."""
    try:
        plain = json.loads(json.dumps(raw, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{DICT_PATH}: not TOML-like data ({exc}); use str, int, float, bool, lists and dicts"
        ) from None
    if not isinstance(plain, dict):
        raise ConfigError(f"{DICT_PATH}: a config is a dict of sections, got {type(raw).__name__}")
    _IN_MEMORY[DICT_PATH] = plain
    try:
        yield DICT_PATH
    finally:
        _IN_MEMORY.pop(DICT_PATH, None)


def read_config(path: Path) -> tuple[dict[str, Any], _Source]:
    """A config file's TOML and its source (for errors); ConfigError when unreadable."""
    if Path(path) in _IN_MEMORY:
        return json.loads(json.dumps(_IN_MEMORY[Path(path)])), _Source(Path(path), "")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' not found; check the path") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc}") from None
    try:
        return tomllib.loads(text), _Source(path, text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_config(path: str | Path, registry: Registry) -> Resolved:
    """Read, validate and resolve a config file; raises ConfigError with file:line: key."""
    path = Path(path)
    raw, source = read_config(path)
    load_plugins(raw, source, registry)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _validation_message(exc, Config, source) from None
    _check_form(config, source)
    _check_baseline(config, raw, source)
    _first_objective(config, raw, source)

    def lookup(kind: str, name: str, loc: Loc) -> Any:
        return source.lookup(registry, kind, name, loc)

    strategy_cls = lookup("strategies", config.strategy.name, ("strategy", "name"))
    if config.benchmark is not None:
        if issubclass(strategy_cls, OneShotStrategy):
            raise source.error(
                ("strategy", "name"),
                f"'{strategy_cls.name}' trains a supernet, which a lookup table cannot; use "
                "[architecture] and [dataset], or an ask/tell strategy such as 'evolution'",
            )
        if getattr(strategy_cls, "needs_budgets", False):
            raise source.error(
                ("strategy", "name"),
                f"'{strategy_cls.name}' gives trials budgets (epochs) with HyperBand, but a "
                "lookup table has one fidelity (final accuracies only); use "
                f"'{strategy_cls.single_fidelity}' (TPE plus 1/3 random proposals, what "
                f"'{strategy_cls.name}' reduces to here), or [architecture] and [dataset]",
            )
        parts = _resolve_benchmark(config, config.benchmark, source, lookup)
    else:
        parts = _resolve_model(config, source, lookup)
    _check_metrics(config, metrics_of(parts.get("architecture")), source)
    if parts.get("architecture") is not None:
        _check_metric_params(config, parts["architecture"], parts["space"], source)
    return resolve_search(path, config, raw, source, strategy_cls, parts)


def resolve_search(
    path: Path,
    config: Config,
    raw: dict[str, Any],
    source: _Source,
    strategy_cls: type[Strategy] | type[OneShotStrategy],
    parts: dict[str, Any],
) -> Resolved:
    """The last steps of resolving a search config (its ``parts``: space and plugins): the
    scheduler, the strategy's options, and a strategy that can be made."""
    _set_scheduler(config, strategy_cls, source)
    if config.scheduler.name == "hyperband_bohb" and "epochs" not in parts["space"].fixed():
        raise source.error(
            ("space", "epochs"),
            "scheduler 'hyperband_bohb' runs trials up to a fixed number of epochs (its "
            "largest budget); set epochs to one number in [space]",
        )
    strategy_options = _plugin_options(
        strategy_cls.Options, config.strategy.options(), source, "strategy"
    )
    resolved = Resolved(
        path=path,
        config=config,
        raw=raw,
        strategy_cls=strategy_cls,
        strategy_options=strategy_options,
        **parts,
    )
    try:
        resolved.make_strategy()
    except AutoplatError as exc:
        raise source.error(("strategy", "name"), str(exc)) from None
    return resolved


def load_plugins(raw: dict[str, Any], source: _Source, registry: Registry) -> None:
    """Load the ``[plugins] modules`` of a config (``read_config``'s pair) into
    ``registry``: files relative to the config file (a dict config's: to the working
    directory) or module names. A module that is not there is a ConfigError naming the
    key; one that fails to import is recorded as a broken plugin, as installed ones are."""
    section = raw.get("plugins", {})
    modules = section.get("modules", []) if isinstance(section, dict) else []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        return  # validation reports the wrong type, with the key
    base = Path.cwd() if source.path == DICT_PATH else source.path.resolve().parent
    for index, spec in enumerate(modules):
        try:
            registry.load_module(spec, base)
        except AutoplatError as exc:
            raise source.error(("plugins", "modules", index), str(exc)) from None


def _first_objective(config: Config, raw: dict[str, Any], source: _Source) -> None:
    """With ``objectives``, the study metric is the first (set from it when not given)."""
    study = config.study
    if study.objectives is not None:
        if len(set(study.objectives)) < len(study.objectives):
            raise source.error(("study", "objectives"), "lists a metric twice")
        if "metric" not in raw.get("study", {}):
            study.metric = study.objectives[0]
        elif study.metric != study.objectives[0]:
            raise source.error(
                ("study", "metric"),
                f"is '{study.metric}' but the first objective is '{study.objectives[0]}'; the "
                "study metric must be the first objective (or leave metric out)",
            )


def _check_metrics(config: Config, known: dict[str, str], source: _Source) -> None:
    """The study metric and any objectives are metrics the trials report."""
    study = config.study
    checks = [(study.metric, ("study", "metric"))]
    checks += [(m, ("study", "objectives")) for m in study.objectives or []]
    for metric, loc in checks:
        if metric not in known:
            close = difflib.get_close_matches(metric, list(known), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise source.error(
                loc, f"unknown metric '{metric}'; {hint}Available: {', '.join(known)}"
            )


def _check_metric_params(
    config: Config, arch: Architecture, space: SearchSpace, source: _Source
) -> None:
    """A metric reported only with a param set (``Architecture.metric_params``) has every
    trial of the space set it."""
    study = config.study
    for metric in study.objectives or [study.metric]:
        param = arch.metric_params.get(metric)
        if param is None:
            continue
        dim = space.dims.get(param)
        values = _some_values(dim, random.Random(0)) if dim is not None else [None]
        if not all(values):
            key = "objectives" if study.objectives else "metric"
            raise source.error(
                ("study", key),
                f"architecture '{arch.name}' reports '{metric}' only when '{param}' is set, "
                f"and some trials of this space leave it empty; set {param} in [space] "
                f'(e.g. {param} = "0, 0.01")',
            )


def _some_values(dim: Dimension, rng: random.Random, samples: int = 20) -> list[Any]:
    """Every value of a dimension a grid can enumerate, else ``samples`` draws from it."""
    try:
        return dim.grid()
    except SpaceError:  # a float range, or a very long int range
        return [dim.sample(rng) for _ in range(samples)]


def _check_baseline(config: Config, raw: dict[str, Any], source: _Source) -> None:
    """A ``[baseline]`` needs data (not a ``[benchmark]``) and takes its model's options only."""
    from autoplat.core.baseline import OPTIONS

    if config.baseline is None:
        return
    if config.benchmark is not None:
        raise source.error(
            ("baseline",),
            "a benchmark study looks its results up and has no data to fit a baseline on; "
            "remove [baseline]",
        )
    model = config.baseline.model
    for key in raw["baseline"]:
        if key != "model" and key not in OPTIONS[model]:
            takes = ", ".join(OPTIONS[model]) or "none"
            raise source.error(
                ("baseline", key),
                f"baseline model '{model}' takes no option '{key}' (its options: {takes}); "
                "remove it",
            )


def _check_form(config: Config, source: _Source) -> None:
    """Exactly one of the two forms: ``[architecture]`` + ``[dataset]``, or ``[benchmark]``."""
    model = config.architecture is not None or config.dataset is not None
    if config.benchmark is not None and model:
        given = " and ".join(
            f"[{key}]" for key in ("architecture", "dataset") if getattr(config, key) is not None
        )
        raise source.error(
            ("benchmark",),
            f"a benchmark study looks its results up instead of training a model, so it "
            f"takes no {given}; remove {given}, or remove [benchmark]",
        )
    if config.benchmark is None and not model:
        raise source.error(
            (),
            "nothing to search: add [architecture] and [dataset] sections (a model and its "
            'data), or a [benchmark] section (a tabular benchmark, e.g. name = "nb201")',
        )
    for given, needed in (("architecture", "dataset"), ("dataset", "architecture")):
        if getattr(config, given) is not None and getattr(config, needed) is None:
            raise source.error(
                (needed,), f"is required with [{given}] but missing; add the [{needed}] section"
            )


Lookup = Callable[[str, str, Loc], Any]


def metrics_of(arch: Architecture | None) -> dict[str, str]:
    """Metrics a study may rank by, with their directions: the common ones and the
    architecture's own."""
    return {**METRICS, **(arch.metrics if arch is not None else {})}


def _resolve_model(config: Config, source: _Source, lookup: Lookup) -> dict[str, Any]:
    """The architecture, the dataset and its options, and the space of a model study."""
    from autoplat.core.training import TRAINER_PARAMS

    assert config.architecture is not None and config.dataset is not None  # _check_form
    arch = lookup("architectures", config.architecture.name, ("architecture", "name"))
    dataset = lookup("datasets", config.dataset.name, ("dataset", "name"))
    options = _plugin_options(dataset.Options, config.dataset.options(), source, "dataset")
    modality, tasks = dataset.kind(options)
    if modality not in arch.modalities or arch.task not in tasks:
        raise source.error(
            ("dataset", "name"),
            f"dataset '{dataset.name}' ({modality}, tasks {', '.join(tasks)}) "
            f"cannot feed architecture '{arch.name}' ({arch.task} on "
            f"{', '.join(arch.modalities)}); pick a matching dataset, its options, "
            "or another architecture",
        )
    space_name = config.architecture.space or arch.default_space
    named = lookup("search_spaces", space_name, ("architecture", "space"))
    what = f"architecture '{arch.name}'"
    trainer_params = {**TRAINER_PARAMS, **arch.trainer_params}
    overrides = {k: v for k, v in config.space.items() if k != "dataset"}
    space = _build_space(named.load(), overrides, source, what, trainer_params)
    if "dataset" in config.space:
        space = space.merged(_dataset_dims(config.space["dataset"], dataset, options, source))
    _check_ranges(space, arch, source)
    _check_buildable(space, arch, source)
    if config.baseline is not None and arch.task != "classification":
        raise source.error(
            ("baseline",),
            f"a baseline is a scikit-learn classifier, and architecture '{arch.name}' does "
            f"{arch.task}; remove [baseline], or search a classification architecture",
        )
    return {"architecture": arch, "dataset": dataset, "dataset_options": options, "space": space}


def _resolve_benchmark(
    config: Config, section: BenchmarkSection, source: _Source, lookup: Lookup
) -> dict[str, Any]:
    """The benchmark, its options and the space of a benchmark study."""
    benchmark = lookup("benchmarks", section.name, ("benchmark", "name"))
    options = _plugin_options(benchmark.Options, section.options(), source, "benchmark")
    try:
        benchmark.check(options)
    except AutoplatError as exc:
        raise source.error(("benchmark", "name"), str(exc)) from None
    for metric in config.study.objectives or [config.study.metric]:
        if metric not in benchmark.metrics:
            key = "objectives" if config.study.objectives else "metric"
            raise source.error(
                ("study", key),
                f"benchmark '{benchmark.name}' does not report '{metric}'; "
                f"use: {', '.join(benchmark.metrics)}",
            )
    if "scheduler" in config.model_fields_set and config.scheduler.name != "fifo":
        raise source.error(
            ("scheduler", "name"),
            f"benchmark '{benchmark.name}' reports each trial's result once, so scheduler "
            f"'{config.scheduler.name}' has nothing to stop early; remove [scheduler]",
        )
    space_name = section.space or benchmark.default_space
    named = lookup("search_spaces", space_name, ("benchmark", "space"))
    space = _build_space(named.load(), config.space, source, f"benchmark '{benchmark.name}'")
    rng = random.Random(0)
    for _ in range(200):
        reason = benchmark.check_params(space.sample(rng))
        if reason is not None:
            loc = ("benchmark", "space") if section.space else ("space",)
            raise source.error(
                loc,
                f"benchmark '{benchmark.name}' cannot look up params of this space "
                f"({reason}); change the space",
            )
    return {"benchmark": benchmark, "benchmark_options": options, "space": space}


def _set_scheduler(config: Config, strategy_cls: type[Strategy], source: _Source) -> None:
    """Without ``[scheduler]``, a model study uses its strategy's ``default_scheduler``."""
    if "scheduler" in config.model_fields_set or config.benchmark is not None:
        return
    try:
        config.scheduler = SchedulerSection(name=strategy_cls.default_scheduler)
    except ValidationError:
        raise source.error(
            ("strategy", "name"),
            f"strategy '{strategy_cls.name}' asks for scheduler "
            f"'{strategy_cls.default_scheduler}', which does not exist (a bug in its plugin); "
            "set [scheduler] name explicitly",
        ) from None


def _build_space(
    base: SearchSpace,
    overrides: dict[str, Any],
    source: _Source,
    what: str,
    extra: Iterable[str] = (),
) -> SearchSpace:
    """``base`` with the ``[space]`` overrides; ``extra`` are keys allowed beside its dims."""
    known = sorted(set(base.dims) | set(extra))
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise source.error(
                ("space", key),
                f"unknown parameter for {what}; {hint}Known: {', '.join(known)}",
            )
    try:
        return base.merged(SearchSpace.from_dict(overrides))
    except SpaceError as exc:
        key = str(exc).split("'")[1] if str(exc).startswith("'") else ""
        message = str(exc).removeprefix(f"'{key}': ")  # the location names the key
        raise source.error(("space", key) if key else ("space",), message) from None


def _dataset_dims(raw: Any, dataset: Dataset, options: Options, source: _Source) -> SearchSpace:
    """``[space] dataset.<option> = ...``: dimensions over dataset options, each value
    checked against the dataset's Options (a trial loads the data with its values)."""
    if not isinstance(raw, dict):
        raise source.error(
            ("space", "dataset"),
            "must be a table of dataset options, e.g. dataset.expert = [0, 1, 2]",
        )
    known = sorted(dataset.Options.model_fields)
    dims: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise source.error(
                ("space", "dataset", key),
                f"unknown option of dataset '{dataset.name}'; {hint}Known: {', '.join(known)}",
            )
        dims[DATASET_PREFIX + key] = value
    try:
        space = SearchSpace.from_dict(dims)
    except SpaceError as exc:
        raise source.error(("space", "dataset"), str(exc)) from None
    base = options.model_dump()
    rng = random.Random(0)
    for name, dim in space.dims.items():
        key = name[len(DATASET_PREFIX) :]
        for value in _some_values(dim, rng):
            try:
                dataset.Options.model_validate({**base, key: value})
            except ValidationError as exc:
                reason = "; ".join(e["msg"] for e in exc.errors())
                raise source.error(
                    ("space", "dataset", key), f"value {value!r} is not valid: {reason}"
                ) from None
    return space


def params_problem(
    arch: Architecture, params: dict[str, Any], spec: DataSpec | None = None
) -> str | None:
    """``arch.check_params`` (with ``spec`` when given), where a plugin that trips over a
    value of the wrong type (a TypeError or ValueError) gives that as its reason."""
    try:
        return arch.check_params(params, spec) if spec is not None else arch.check_params(params)
    except (TypeError, ValueError) as exc:
        return f"{arch.name}: cannot check params {params}: {exc}"


def _check_ranges(space: SearchSpace, arch: Architecture, source: _Source) -> None:
    """Every value a dimension can take is in its param's range (``Architecture.ranges``),
    so no trial starts with a value that can never work."""
    ranges = arch.ranges()
    for key, dim in space.dims.items():
        if key in ranges and (problem := ranges[key].dimension_problem(dim)) is not None:
            raise source.error(("space", key), f"{problem}; change it in [space]")


def unbuildable(space: SearchSpace, arch: Architecture, spec: DataSpec | None = None) -> str | None:
    """Why no params of 200 sampled from ``space`` can build ``arch`` (for ``spec``'s data,
    when given): the first sample's reason; None when one can."""
    rng = random.Random(0)
    first_reason = None
    takes_spec = len(inspect.signature(arch.check_params).parameters) > 1  # not every plugin's
    if spec is not None and not takes_spec:
        return None  # a plugin that checks params alone (the config-time check did)
    for _ in range(200):
        params, _ = arch.split_params(split_dataset_params(space.sample(rng))[1])
        reason = params_problem(arch, params, spec)
        if reason is None:
            return None
        first_reason = first_reason or reason
    return first_reason


def _check_buildable(space: SearchSpace, arch: Architecture, source: _Source) -> None:
    """Refuse a space where no sampled params can build the architecture (before any trial)."""
    if (reason := unbuildable(space, arch)) is not None:
        raise source.error(
            ("space",),
            f"none of 200 sampled params can build architecture '{arch.name}' (e.g. {reason}); "
            "change the [space] values",
        )
