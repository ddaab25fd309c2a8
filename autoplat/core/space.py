"""Search-space primitives, their TOML grammar, and conversion to Optuna and Ray Tune.

TOML grammar, one key per dimension::

    depth = [2, 4, 6]                              # categorical
    heads = { choices = [2, 4] }                   # categorical, explicit form
    width = { low = 32, high = 128, step = 32 }    # int range (both bounds ints)
    lr = { low = 1e-4, high = 1e-2, log = true }   # float range
    epochs = 5                                     # fixed value
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoplat.core.errors import AutoplatError

Value = int | float | str | bool
ParamsKey = tuple[tuple[str, Any], ...]


def params_key(params: dict[str, Any]) -> ParamsKey:
    """A hashable form of ``params`` that ignores key order."""
    return tuple(sorted(params.items()))


DATASET_PREFIX = "dataset."  # a dimension over a dataset option, e.g. dataset.expert


def split_dataset_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's params as (dataset options it overrides, the model and trainer params)."""
    data = {k[len(DATASET_PREFIX) :]: v for k, v in params.items() if k.startswith(DATASET_PREFIX)}
    rest = {k: v for k, v in params.items() if not k.startswith(DATASET_PREFIX)}
    return data, rest


class SpaceError(AutoplatError):
    """A search-space definition is invalid."""


def _same(a: Any, b: Any) -> bool:
    """Equal and both bools or both not (True is not the int 1 here)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Value, ...]

    def sample(self, rng: random.Random) -> Value:
        return rng.choice(self.choices)

    def contains(self, value: Any) -> bool:
        return any(_same(value, c) for c in self.choices)

    def mutate(self, value: Value, rng: random.Random) -> Value:
        others = [c for c in self.choices if c != value]
        return rng.choice(others) if others else value

    def grid(self) -> list[Value]:
        return list(self.choices)

    def edges(self) -> list[Value]:
        """The values to check against a param's range: every choice."""
        return list(self.choices)

    def to_optuna(self):
        import optuna

        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def to_tune(self):
        from ray import tune

        return tune.choice(list(self.choices))


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def sample(self, rng: random.Random) -> int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            return min(self.high, max(self.low, int(value)))
        return rng.randrange(self.low, self.high + 1, self.step)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (self.log or (value - self.low) % self.step == 0)
        )

    def mutate(self, value: int, rng: random.Random) -> int:
        if self.high == self.low:
            return value
        for _ in range(16):
            candidate = self.sample(rng)
            if candidate != value:
                return candidate
        return candidate

    def edges(self) -> list[int]:
        """The values to check against a param's range: low and high."""
        return [self.low, self.high]

    def grid(self) -> list[int]:
        values = list(range(self.low, self.high + 1, self.step))
        if len(values) > 1000:
            raise SpaceError(
                f"int range [{self.low}, {self.high}] has {len(values)} values: too many for a "
                "grid; give a list of values instead"
            )
        return values

    def to_optuna(self):
        import optuna

        return optuna.distributions.IntDistribution(
            self.low, self.high, log=self.log, step=1 if self.log else self.step
        )

    def to_tune(self):
        from ray import tune

        if self.log:
            return tune.lograndint(self.low, self.high + 1)
        if self.step != 1:
            return tune.qrandint(self.low, self.high, self.step)
        return tune.randint(self.low, self.high + 1)


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def sample(self, rng: random.Random) -> float:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            return min(self.high, max(self.low, value))
        return rng.uniform(self.low, self.high)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )

    def mutate(self, value: float, rng: random.Random) -> float:
        return self.sample(rng)

    def edges(self) -> list[float]:
        """The values to check against a param's range: low and high."""
        return [self.low, self.high]

    def grid(self) -> list[float]:
        raise SpaceError(
            f"float range [{self.low}, {self.high}] cannot be enumerated by a grid; "
            "give a list of values instead"
        )

    def to_optuna(self):
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def to_tune(self):
        from ray import tune

        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)


@dataclass(frozen=True)
class Fixed:
    value: Value

    def sample(self, rng: random.Random) -> Value:
        return self.value

    def contains(self, value: Any) -> bool:
        return _same(value, self.value)

    def mutate(self, value: Value, rng: random.Random) -> Value:
        return self.value

    def grid(self) -> list[Value]:
        return [self.value]

    def edges(self) -> list[Value]:
        """The values to check against a param's range: the value."""
        return [self.value]

    def to_optuna(self):
        import optuna

        return optuna.distributions.CategoricalDistribution([self.value])

    def to_tune(self):
        return self.value


Dimension = Categorical | IntRange | FloatRange | Fixed

_RANGE_KEYS = {"low", "high", "log", "step"}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Value) -> str:
    """What a choice is, for a mixed-type message: numbers, strings or booleans."""
    if isinstance(value, bool):
        return "booleans"
    return "strings" if isinstance(value, str) else "numbers"


def parse_dimension(key: str, raw: Any) -> Dimension:
    """Turn one TOML value into a dimension; ``key`` names it in errors."""
    if isinstance(raw, list):
        if not raw:
            raise SpaceError(f"'{key}': an empty list has nothing to choose from")
        if not all(isinstance(choice, Value) for choice in raw):
            raise SpaceError(f"'{key}': choices must be numbers, strings or booleans, got {raw!r}")
        kinds = sorted({_kind(choice) for choice in raw})
        if len(kinds) > 1:
            raise SpaceError(
                f"'{key}': the choices {raw!r} mix {' and '.join(kinds)}; give values of one "
                "type (e.g. all numbers)"
            )
        return Categorical(tuple(raw))
    if isinstance(raw, dict):
        if set(raw) == {"choices"}:
            return parse_dimension(key, raw["choices"])
        unknown = set(raw) - _RANGE_KEYS
        if unknown or not {"low", "high"} <= set(raw):
            raise SpaceError(
                f"'{key}': a range needs 'low' and 'high' (optional 'log', 'step'); "
                f"got keys {sorted(raw)}. For a list of values write {key} = [a, b, c]"
            )
        low, high, log = raw["low"], raw["high"], raw.get("log", False)
        if not (_is_number(low) and _is_number(high)):
            raise SpaceError(f"'{key}': 'low' and 'high' must be numbers, got {low!r}, {high!r}")
        if not isinstance(log, bool):
            raise SpaceError(f"'{key}': 'log' must be true or false, got {log!r}")
        if low >= high:
            raise SpaceError(f"'{key}': 'low' ({low}) must be below 'high' ({high})")
        if log and low <= 0:
            raise SpaceError(f"'{key}': a log range needs 'low' > 0, got {low}")
        if isinstance(low, int) and isinstance(high, int):
            step = raw.get("step", 1)
            if not isinstance(step, int) or isinstance(step, bool) or step < 1:
                raise SpaceError(f"'{key}': 'step' must be a positive integer, got {step!r}")
            if log and step != 1:
                raise SpaceError(f"'{key}': 'step' cannot be combined with 'log'")
            return IntRange(low, high, log, step)
        if "step" in raw:
            raise SpaceError(f"'{key}': 'step' applies to int ranges only")
        return FloatRange(float(low), float(high), log)
    if isinstance(raw, Value):
        return Fixed(raw)
    raise SpaceError(f"'{key}': cannot read {raw!r} as a search dimension")


@dataclass
class SearchSpace:
    """Named dimensions, in a stable order."""

    dims: dict[str, Dimension] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SearchSpace:
        return cls({key: parse_dimension(key, value) for key, value in raw.items()})

    @classmethod
    def from_toml(cls, path: str | Path) -> SearchSpace:
        with open(path, "rb") as f:
            return cls.from_dict(tomllib.load(f))

    def merged(self, overrides: SearchSpace) -> SearchSpace:
        """A new space: these dimensions, replaced or extended by ``overrides``."""
        return SearchSpace({**self.dims, **overrides.dims})

    def sample(self, rng: random.Random) -> dict[str, Value]:
        return {key: dim.sample(rng) for key, dim in self.dims.items()}

    def fresh_sample(self, rng: random.Random, seen: set[ParamsKey]) -> dict[str, Value]:
        """A sample whose ``params_key`` is not in ``seen``, when 32 tries find one."""
        for _ in range(32):
            params = self.sample(rng)
            if params_key(params) not in seen:
                return params
        return params

    def contains(self, params: dict[str, Any]) -> bool:
        return params.keys() == self.dims.keys() and all(
            dim.contains(params[key]) for key, dim in self.dims.items()
        )

    def searchable(self) -> dict[str, Dimension]:
        """The dimensions that can vary (fixed values left out)."""
        return {k: d for k, d in self.dims.items() if not isinstance(d, Fixed)}

    def fixed(self) -> dict[str, Value]:
        return {k: d.value for k, d in self.dims.items() if isinstance(d, Fixed)}

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions for the searchable dimensions."""
        return {key: dim.to_optuna() for key, dim in self.searchable().items()}

    def to_tune(self) -> dict[str, Any]:
        """A Ray Tune ``param_space``: domains for ranges, plain values for fixed ones."""
        return {key: dim.to_tune() for key, dim in self.dims.items()}


@dataclass(frozen=True)
class NamedSpace:
    """A search space that plugins register under a name; ``source`` is a TOML path or a dict."""

    name: str
    source: Path | dict[str, Any]
    description: str = ""

    def load(self) -> SearchSpace:
        if isinstance(self.source, dict):
            return SearchSpace.from_dict(self.source)
        return SearchSpace.from_toml(self.source)
