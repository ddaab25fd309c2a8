"""Config files: TOML -> validated pydantic models -> resolved plugins, with friendly errors.

Every error names the file, the key (and its line when found) and how to fix it.
"""

from __future__ import annotations

import difflib
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoplat.core.errors import AutoplatError, ConfigError
from autoplat.core.interfaces import Architecture, Dataset, Options, Strategy
from autoplat.core.registry import Registry
from autoplat.core.space import SearchSpace, SpaceError

Loc = tuple[str | int, ...]
METRICS = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    "train_loss": "minimize",
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
    storage: str | None = None
    checkpoints: Literal["best", "all", "none"] = "best"  # which trials keep their weights
    checkpoint_dir: str | None = None  # default: checkpoints/ next to a SQLite store


class ArchitectureSection(Section):
    name: str
    space: str | None = None


class StrategySection(PluginSection):
    name: str = "random"


class SchedulerSection(Section):
    name: Literal["fifo", "asha", "hyperband", "median"] = "fifo"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    min_samples_required: int = Field(3, ge=1)


class ResourcesSection(Section):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, ge=1)


class Config(Section):
    study: StudySection
    architecture: ArchitectureSection
    dataset: PluginSection
    space: dict[str, Any] = Field(default_factory=dict)
    strategy: StrategySection = Field(default_factory=StrategySection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)


@dataclass
class Resolved:
    """A validated config with its plugins looked up and its search space built."""

    path: Path
    config: Config
    raw: dict[str, Any]
    architecture: Architecture
    dataset: Dataset
    dataset_options: Options
    strategy_cls: type[Strategy]
    strategy_options: Options
    space: SearchSpace

    @property
    def direction(self) -> str:
        return self.config.study.direction or METRICS[self.config.study.metric]

    def make_strategy(self) -> Strategy:
        return self.strategy_cls(
            self.space, self.direction, self.config.study.seed, self.strategy_options
        )


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
        message = f"{err['msg']} (got {err.get('input')!r})"
    return source.error(loc, message)


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    for key in loc:
        field = model.model_fields.get(str(key))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _plugin_options(
    options_cls: type[Options], raw: dict[str, Any], source: _Source, section: str
) -> Options:
    try:
        return options_cls.model_validate(raw)
    except ValidationError as exc:
        raise _validation_message(exc, options_cls, source, (section,)) from None


def load_config(path: str | Path, registry: Registry) -> Resolved:
    """Read, validate and resolve a config file; raises ConfigError with file:line: key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' not found; check the path") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc}") from None
    source = _Source(path, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _validation_message(exc, Config, source) from None

    def lookup(kind: str, name: str, loc: Loc) -> Any:
        try:
            return registry.get(kind, name)
        except AutoplatError as exc:
            raise source.error(loc, str(exc)) from None

    arch = lookup("architectures", config.architecture.name, ("architecture", "name"))
    dataset = lookup("datasets", config.dataset.name, ("dataset", "name"))
    strategy_cls = lookup("strategies", config.strategy.name, ("strategy", "name"))
    if dataset.modality not in arch.modalities or arch.task not in dataset.tasks:
        raise source.error(
            ("dataset", "name"),
            f"dataset '{dataset.name}' ({dataset.modality}, tasks {', '.join(dataset.tasks)}) "
            f"cannot feed architecture '{arch.name}' ({arch.task} on "
            f"{', '.join(arch.modalities)}); pick a matching dataset or architecture",
        )
    if config.study.metric not in METRICS:
        close = difflib.get_close_matches(config.study.metric, list(METRICS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise source.error(
            ("study", "metric"),
            f"unknown metric '{config.study.metric}'; {hint}Available: {', '.join(METRICS)}",
        )

    space_name = config.architecture.space or arch.default_space
    named = lookup("search_spaces", space_name, ("architecture", "space"))
    space = _build_space(named.load(), config.space, arch, source)

    dataset_options = _plugin_options(dataset.Options, config.dataset.options(), source, "dataset")
    strategy_options = _plugin_options(
        strategy_cls.Options, config.strategy.options(), source, "strategy"
    )
    resolved = Resolved(
        path=path,
        config=config,
        raw=raw,
        architecture=arch,
        dataset=dataset,
        dataset_options=dataset_options,
        strategy_cls=strategy_cls,
        strategy_options=strategy_options,
        space=space,
    )
    try:
        resolved.make_strategy()
    except AutoplatError as exc:
        raise source.error(("strategy", "name"), str(exc)) from None
    return resolved


def _build_space(
    base: SearchSpace, overrides: dict[str, Any], arch: Architecture, source: _Source
) -> SearchSpace:
    from autoplat.core.training import TRAINER_PARAMS

    known = sorted(set(base.dims) | set(TRAINER_PARAMS))
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise source.error(
                ("space", key),
                f"unknown parameter for architecture '{arch.name}'; {hint}"
                f"Known: {', '.join(known)}",
            )
    try:
        space = base.merged(SearchSpace.from_dict(overrides))
    except SpaceError as exc:
        key = str(exc).split("'")[1] if str(exc).startswith("'") else ""
        raise source.error(("space", key) if key else ("space",), str(exc)) from None
    _check_buildable(space, arch, source)
    return space


def _check_buildable(space: SearchSpace, arch: Architecture, source: _Source) -> None:
    """Refuse a space where no sampled params can build the architecture (before any trial)."""
    from autoplat.core.training import TRAINER_PARAMS

    rng = random.Random(0)
    first_reason = None
    for _ in range(200):
        params = {k: v for k, v in space.sample(rng).items() if k not in TRAINER_PARAMS}
        reason = arch.check_params(params)
        if reason is None:
            return
        first_reason = first_reason or reason
    raise source.error(
        ("space",),
        f"none of 200 sampled params can build architecture '{arch.name}' (e.g. {first_reason}); "
        "change the [space] values",
    )
