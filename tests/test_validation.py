"""Values that can never work are refused when the config is read: file:line: key, exit 2,
no traceback, nothing started (issue 16, point 9)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from autoplat import hookimpl
from autoplat.cli import main
from autoplat.core.al_study import load_al_config
from autoplat.core.config import load_config
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import (
    DROPOUT,
    POSITIVE,
    SIZE,
    Architecture,
    DataSpec,
    floats,
    ints,
)
from autoplat.core.registry import get_registry
from autoplat.core.runner import load_splits
from autoplat.core.space import NamedSpace, SpaceError, parse_dimension
from autoplat.core.store import Store
from autoplat.testing import registered_plugin

SEARCH = """\
[study]
name = "ranges"
trials = 2

[architecture]
name = "{arch}"

[dataset]
name = "digits"

[space]
{space}
"""

AL = """\
[study]
name = "al-ranges"
seeds = 2

[model]
name = "mlp"
hidden = 64

[training]
epochs = 15

[dataset]
name = "digits"

[al]
acquisitions = ["random"]
initial = 20
batch_size = 20
budget = 60
"""


def _search(arch: str, space: str) -> str:
    """A search config of ``arch`` on digits with these [space] lines (1 epoch unless set)."""
    return SEARCH.format(arch=arch, space=space if "epochs" in space else f"{space}\nepochs = 1")


def _line(text: str, start: str) -> int:
    """The 1-based line of ``text`` that starts with ``start``."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def _refused(path: Path, capsys, command: str, key: str, line: int, *fragments: str) -> None:
    """``platform COMMAND path`` exits 2 with ``path:line: key: ...`` and no traceback; the
    store gets no study."""
    db = path.parent / "validation.db"
    code = main([command, str(path), "--storage", f"sqlite:///{db}"])
    error = capsys.readouterr().err
    assert code == 2, error
    assert error.startswith(f"error: {path}:{line}: {key}: ") and error.count("\n") == 1, error
    for fragment in fragments:
        assert fragment in error, error
    assert "Traceback" not in error
    assert not db.exists() or Store(f"sqlite:///{db}").studies() == []


SEARCH_CASES = [
    # (architecture, [space] lines, the refused key, message fragments)
    ("mlp", "epochs = 0", "epochs", ["must be an integer in [1, 100000]", "got 0"]),
    ("mlp", "batch_size = 0", "batch_size", ["must be an integer in [1, 1048576]", "got 0"]),
    ("mlp", "lr = -0.1", "lr", ["must be a number > 0, got -0.1", "change it in [space]"]),
    ("mlp", "lr = nan", "lr", ["must be a number > 0, got nan"]),
    ("mlp", "lr = { low = 0.0, high = 0.1 }", "lr", ["must be a number > 0, got 0.0"]),
    ("mlp", "weight_decay = [0.0, -0.01]", "weight_decay", ["must be a number >= 0"]),
    ("mlp", "warmup_epochs = -1", "warmup_epochs", ["must be an integer in [0, 100000]"]),
    ("mlp", "hidden = 1e9", "hidden", ["[1, 65536]", "absurd allocations"]),
    ("mlp", "hidden = [64, 1000000000]", "hidden", ["got 1000000000", "absurd allocations"]),
    ("mlp", "hidden = { low = 1, high = 2.5 }", "hidden", ["got a float range [1.0, 2.5]"]),
    ("mlp", "depth = [0, 1]", "depth", ["must be an integer in [1, 1024]", "got 0"]),
    ("mlp", "dropout = { low = 0.0, high = 1.0 }", "dropout", ["in [0, 1), got 1.0"]),
    ("mlp", 'depth = [2, "three"]', "depth", ["mix numbers and strings", "one type"]),
    ("vit", 'depth = [2, "three"]', "depth", ["mix numbers and strings"]),
    ("vit", 'depth = "three"', "depth", ["must be an integer in [1, 1024]", "got 'three'"]),
    ("vit", "heads = [true, 2]", "heads", ["mix booleans and numbers"]),
    ("vit", "width = 100000", "width", ["[1, 65536]", "absurd allocations"]),
    ("vit", "heads = [1, 2.0]", "heads", ["must be an integer", "got 2.0"]),
    ("dino", "batch_size = 1", "batch_size", ["must be an integer in [2, 1048576]"]),
    ("dino", "teacher_momentum = 1.5", "teacher_momentum", ["in [0, 1], got 1.5"]),
]


@pytest.mark.parametrize(
    ("arch", "space", "key", "fragments"),
    SEARCH_CASES,
    ids=[f"{arch}:{space}" for arch, space, _, _ in SEARCH_CASES],
)
def test_search_refuses_values_that_can_never_work(
    tmp_path, capsys, arch, space, key, fragments
) -> None:
    text = _search(arch, space)
    path = tmp_path / "search.toml"
    path.write_text(text)
    line = _line(text, key)
    _refused(path, capsys, "search", f"space.{key}", line, *fragments)


@pytest.mark.parametrize(
    ("arch", "space"),
    [
        ("mlp", "hidden = 65536\ndepth = [1, 1024]\ndropout = [0.0, 0.99]\nlr = 1"),
        ("vit", "width = { low = 16, high = 64, step = 16 }\nheads = [1, 2]\nepochs = 100000"),
    ],
)
def test_values_at_the_edges_of_their_ranges_are_accepted(tmp_path, arch, space) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(_search(arch, space))
    assert load_config(path, get_registry()).architecture.name == arch


def test_every_builtin_architecture_accepts_its_defaults_and_its_space() -> None:
    """The ranges do not refuse what the platform ships: each architecture's defaults and
    every value of its default search space."""
    registry = get_registry()
    checked = 0
    for name in registry.names("architectures"):
        arch = registry.get("architectures", name)
        assert arch.range_problem(arch.defaults) is None, arch.name
        assert arch.range_problem(arch.trainer_params) is None, arch.name
        space = registry.get("search_spaces", arch.default_space).load()
        for key, dim in space.dims.items():
            rule = arch.ranges().get(key)
            if rule is not None:
                assert rule.dimension_problem(dim) is None, (arch.name, key)
                checked += 1
    assert checked > 50  # the builtin families declare their ranges


class OldStyleNet(Architecture):
    """An architecture on the old interface: check_params(params) alone, no ranges."""

    name: ClassVar[str] = "validation-old-style"
    task: ClassVar[str] = "classification"
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    default_space: ClassVar[str] = "validation-old-style"
    defaults: ClassVar[dict[str, Any]] = {"width": 8}

    def check_params(self, params: dict[str, Any]) -> str | None:
        width = {**self.defaults, **params}["width"]
        return None if width >= 1 else f"width must be >= 1, got {width}"

    def build(self, params: dict[str, Any], spec: DataSpec):
        raise NotImplementedError


class OldStylePlugin:
    @hookimpl
    def register_architectures(self, register) -> None:
        register(OldStyleNet)

    @hookimpl
    def register_search_spaces(self, register) -> None:
        register(NamedSpace("validation-old-style", {"width": [8], "epochs": 1}))


@pytest.fixture
def old_style(tmp_path):
    """A config of the old-style architecture, with a [space] line to set."""
    with registered_plugin(OldStylePlugin(), "validation-old-style"):
        yield lambda space: _write(tmp_path, _search(OldStyleNet.name, space))


def _write(folder: Path, text: str) -> Path:
    path = folder / "old.toml"
    path.write_text(text)
    return path


def test_a_plugin_without_ranges_gets_no_range_checks_but_the_trainer_s(old_style, capsys):
    # no range of its own: a width the builtin families would refuse is the plugin's call
    resolved = load_config(old_style("width = 1000000"), get_registry())
    assert resolved.space.fixed()["width"] == 1000000
    # the trainer's params are the core's: checked for every architecture
    path = old_style("width = 8\nbatch_size = 0")
    _refused(path, capsys, "search", "space.batch_size", _line(path.read_text(), "batch"), "got 0")


def test_a_plugin_that_trips_over_a_wrong_type_gives_one_line(old_style, capsys) -> None:
    path = old_style('width = "wide"')
    line = _line(path.read_text(), "[space]")
    _refused(path, capsys, "search", "space", line, "cannot check params", "'wide'")


def test_al_refuses_values_that_can_never_work(tmp_path, capsys) -> None:
    cases = [
        ("seeds = 2", "seeds = [-1]", "study.seeds", "seeds must be >= 0"),
        ("seeds = 2", "seeds = [0, 3, -2]", "study.seeds", "got [0, 3, -2]"),
        ("seeds = 2", "seeds = 0", "study.seeds", "give 1 to 10000 seeds"),
        ("seeds = 2", "seeds = 1000000000", "study.seeds", "give 1 to 10000 seeds"),
        ("hidden = 64", "hidden = 1e9", "model.hidden", "[1, 65536]"),
        ("hidden = 64", 'hidden = "wide"', "model.hidden", "got 'wide'"),
        ("epochs = 15", "epochs = 0", "training.epochs", "greater than or equal to 1"),
        ("epochs = 15", "epochs = 1000000", "training.epochs", "[1, 100000]"),
        ("epochs = 15", "epochs = 15\nlr = -0.1", "training.lr", "greater than 0"),
        ("initial = 20", "initial = 0", "al.initial", "greater than or equal to 1"),
        ("batch_size = 20", "batch_size = 0", "al.batch_size", "greater than or equal to 1"),
        ("budget = 60", "budget = 10", "al.budget", "below initial 20"),
        ("budget = 60", "budget = 60\nmc_samples = 1", "al.mc_samples", "greater than or"),
        ("budget = 60", "budget = 60\ncommittee_size = 1", "al.committee_size", "greater"),
        ("budget = 60", "budget = 60\n[oracle]\npoll_seconds = 0", "oracle.poll_seconds", "0"),
    ]
    for old, new, key, fragment in cases:
        text = AL.replace(old, new, 1)
        path = tmp_path / "al.toml"
        path.write_text(text)
        line = _line(text, new.splitlines()[-1])
        _refused(path, capsys, "al", key, line, fragment)


def test_al_initial_larger_than_the_pool_is_refused_once_the_data_is_loaded(tmp_path) -> None:
    """``initial`` is checked against the pool when the data loads, before Ray starts."""
    path = tmp_path / "al.toml"
    text = AL.replace("initial = 20", "initial = 5000").replace("budget = 60", "budget = 6000")
    path.write_text(text)
    resolved = load_al_config(path, get_registry())
    splits = load_splits("digits", resolved.dataset_options.model_dump_json(), 0)
    pool = len(splits.train[0])
    with pytest.raises(ConfigError) as info:
        resolved.check_data(splits)
    message = str(info.value)
    assert message.startswith(f"{path}:{_line(text, 'initial')}: al.initial: 5000 initial labels")
    assert f"has only {pool} examples" in message and f"set initial below {pool}" in message
    path.write_text(AL)
    load_al_config(path, get_registry()).check_data(splits)  # 20 of the pool: fine


def test_ranges_describe_themselves_and_refuse_what_is_not_a_number_of_their_kind() -> None:
    assert str(SIZE) == "an integer in [1, 65536] (the cap prevents absurd allocations)"
    assert str(DROPOUT) == "a number in [0, 1)" and str(POSITIVE) == "a number > 0"
    assert str(floats(high=1)) == "a number <= 1" and str(ints(0)) == "an integer >= 0"
    assert SIZE.contains(np.int64(8)) and SIZE.contains(65536) and not SIZE.contains(65537)
    for bad in (True, 8.0, "8", None, 0):
        assert SIZE.problem(bad) == f"must be {SIZE}, got {bad!r}"
    assert POSITIVE.contains(1) and POSITIVE.contains(np.float32(0.5))
    for bad in (0, -1e-9, math.nan, math.inf, False):
        assert not POSITIVE.contains(bad), bad
    assert DROPOUT.contains(0) and not DROPOUT.contains(1)


def test_a_list_of_mixed_types_is_not_a_dimension() -> None:
    assert parse_dimension("x", [1, 2.5]).edges() == [1, 2.5]  # numbers may be ints and floats
    for raw, kinds in (([2, "three"], "numbers and strings"), ([True, "a"], "booleans and str")):
        with pytest.raises(SpaceError, match=f"'x': the choices .* mix {kinds}"):
            parse_dimension("x", raw)


def test_the_architecture_checks_the_same_ranges_when_a_trial_builds_the_model() -> None:
    """A trial's params (a resumed study's, a plugin calling build) meet the same ranges."""
    mlp = get_registry().get("architectures", "mlp")
    assert mlp.check_params({"hidden": 10**9}) == (f"mlp: hidden must be {SIZE}, got 1000000000")
    spec = DataSpec("classification", "image", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="hidden must be an integer"):
        mlp.build({"hidden": 10**9}, spec)


def test_messages_are_one_line_with_the_file_line_and_key(tmp_path, capsys) -> None:
    path = tmp_path / "one.toml"
    path.write_text(_search("mlp", "hidden = 1e9"))
    assert main(["search", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}:12: space.hidden: must be an integer in [1, 65536] (the cap prevents "
        "absurd allocations), got 1000000000.0; change it in [space]\n"
    )


def test_curate_scorer_options_have_ranges() -> None:
    import pydantic

    from autoplat.core.errors import ConfigError
    from autoplat.plugins.scorers.embedding.balanced import Balanced
    from autoplat.plugins.scorers.embedding.mode import MoDE

    with pytest.raises(ConfigError, match="experts = 10 exceeds fine_clusters = 4"):
        MoDE(MoDE.Options(experts=10, fine_clusters=4))
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        Balanced.Options(target=10, levels=[10], resample_points=[0])
    with pytest.raises(pydantic.ValidationError, match=r"each in \[1, 1000000\]"):
        Balanced.Options(target=10, levels=[0])
