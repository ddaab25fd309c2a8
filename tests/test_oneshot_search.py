"""One-shot strategies through `platform search`: a supernet trial, then derived cells."""

from __future__ import annotations

import json

import pytest

from autoplat.core.store import Store, TrialState
from autoplat.plugins.nb201.architecture import NB201
from autoplat.testing import run_platform

ONE_SHOT = """
[study]
name = "{name}"
seed = 0

[architecture]
name = "nb201"

[dataset]
name = "digits"

[space]
epochs = 2
lr = 0.01
edge_3_0 = ["nor_conv_3x3", "skip_connect"]

[strategy]
{strategy}

[resources]
cpus_per_trial = 1
"""


@pytest.mark.slow
def test_darts_supernet_then_derived_cell_trained_and_resume_is_a_no_op(
    write_config, ray_address, tmp_path
) -> None:
    strategy = 'name = "darts"\nepochs = 2\nbatch_size = 128'
    config = write_config(ONE_SHOT.format(name="darts-digits", strategy=strategy))
    url = f"sqlite:///{tmp_path / 'o.db'}"
    result = run_platform("search", str(config), "--storage", url, "--address", ray_address)
    assert result.returncode == 0, result.stderr
    store = Store(url, create=False)
    study = store.get_study("darts-digits")
    supernet, *trained = store.trials(study.id)
    assert supernet.params_dict == {"one_shot": "darts"}
    assert supernet.state == TrialState.COMPLETE and supernet.value is None
    curve = store.metrics(supernet.id)
    assert sorted(curve) == [1, 2] and "supernet_val_accuracy" in curve[2]
    derived = supernet.attrs_dict["derived"]
    assert len(derived) == 1 and NB201().check_params(derived[0]) is None
    assert derived[0]["edge_3_0"] in ("nor_conv_3x3", "skip_connect")
    assert [t.params_dict for t in trained] == derived
    assert trained[0].state == TrialState.COMPLETE and 0 < trained[0].value <= 1
    assert "test_accuracy" in store.final_metrics(trained[0].id)
    shown = json.loads(run_platform("show", "darts-digits", "--storage", url, "--json").stdout)
    assert shown["best"]["number"] == trained[0].number

    again = run_platform(
        "search", str(config), "--storage", url, "--resume", "--address", ray_address
    )
    assert again.returncode == 0, again.stderr
    assert len(Store(url).trials(study.id)) == 2  # nothing retrained


@pytest.mark.slow
def test_one_shot_refuses_a_benchmark_a_varying_hyperparameter_and_a_plain_architecture(
    write_config,
) -> None:
    bench = write_config(
        '[study]\nname = "x"\n[benchmark]\nname = "nb201"\n[strategy]\nname = "spos"\n',
        name="bench",
    )
    result = run_platform("search", str(bench))
    assert result.returncode == 2
    assert "'spos' trains a supernet, which a lookup table cannot" in result.stderr
    varying = write_config(
        ONE_SHOT.format(name="v", strategy='name = "spos"').replace(
            "lr = 0.01", "lr = [0.01, 0.1]"
        ),
        name="varying",
    )
    result = run_platform("search", str(varying))
    assert result.returncode == 2 and "'lr' vary" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    plain = write_config(
        ONE_SHOT.format(name="p", strategy='name = "darts"')
        .replace('name = "nb201"', 'name = "vit"')
        .replace('edge_3_0 = ["nor_conv_3x3", "skip_connect"]\n', ""),
        name="plain",
    )
    result = run_platform("search", str(plain))
    assert result.returncode == 2, result.stderr
    where = f"{plain}:17: strategy.name: "  # the file, the line and the key to change
    assert where + "one-shot strategy 'darts' trains a weight-sharing supernet" in result.stderr
    assert "architecture 'vit' cannot build" in result.stderr
    assert "Traceback" not in result.stderr
