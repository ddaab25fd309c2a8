"""The Python API through its public surface: docs/python.md run as a notebook (own
trainable, DataFrame, history, resume, TUI data model, Optuna), dict configs validated as
files are, local plugin modules, and Optuna export of a multi-objective study."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

import autoplat
from autoplat.cli import main
from autoplat.core.registry import get_registry

DOC = (Path(__file__).parents[1] / "docs" / "python.md").read_text()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # its plots
def test_the_docs_notebook_runs_and_its_study_reads_everywhere(tmp_path, ray_address, monkeypatch):
    import matplotlib.pyplot as plt
    import optuna

    from autoplat.tui.data import Reader, TrialsModel

    monkeypatch.chdir(tmp_path)
    storage, optuna_url = f"sqlite:///{tmp_path}/docs.db", f"sqlite:///{tmp_path}/optuna.db"
    ns = {"__name__": "__main__", "STORAGE": storage, "OPTUNA_STORAGE": optuna_url}
    blocks = re.findall(r"```python\n(.*?)```", DOC, re.S)
    assert len(blocks) == 4
    for block in blocks:
        exec(compile(block, "docs/python.md", "exec"), ns)  # noqa: S102 - the docs' own code

    before, study = ns["frame"], ns["study"]  # the DataFrame of the first run (2 trials)
    frame = study.trials_dataframe()
    assert list(frame["number"]) == [0, 1, 2] and set(frame["state"]) == {"complete"}
    assert frame["params_alpha"].between(1e-5, 1e-2).all() and set(frame["params_epochs"]) == {2}
    # resuming ran one more trial and left the first two as they were
    assert list(frame["params_alpha"][:2]) == list(before["params_alpha"])
    assert list(frame["value"][:2]) == list(before["value"])
    assert (frame["value"] == frame["final_val_accuracy"]).all()
    assert (frame["best_val_accuracy"] >= frame["value"]).all()
    assert (frame["duration_s"] > 0).all() and frame["node"].notna().all()
    history = study.history()
    assert list(history.columns) == ["trial", "step", "metric", "value"]
    assert sorted(zip(history.trial, history.step, strict=True)) == [
        (t, s) for t in range(3) for s in (1, 2)
    ]
    last = history[history.step == 2].set_index("trial")["value"]
    assert list(last) == list(frame["value"])
    assert ns["curves"].shape == (2, 2)  # steps x trials, before resuming
    assert study.best_value == frame["value"].max() == ns["again"].best_value
    assert study.best_params == {
        "alpha": frame["params_alpha"][frame["value"].idxmax()],
        "epochs": 2,
    }
    assert [p["number"] for p in study.pareto_front()] == [study.best_trial["number"]]

    listed = next(s for s in autoplat.list_studies(storage) if s["name"] == "sgd-digits")
    assert listed["target_trials"] == 3  # the resumed run's trials, not the first run's 2

    # the TUI's data model reads the same study
    reader = Reader(storage)
    row = next(r for r in reader.studies() if r.name == "sgd-digits")
    assert (row.done, row.failed, row.best) == (3, 0, study.best_value)
    model = TrialsModel(reader.study("sgd-digits"))
    model.poll(reader)
    assert sorted(model.trials) == [0, 1, 2] and model.best.number == study.best_trial["number"]
    assert [v for _, v in model.trials[0].curve] == list(history[history.trial == 0]["value"])
    reader.close()

    # and so does Optuna's (what optuna-dashboard and optuna.visualization read)
    loaded = optuna.load_study(study_name="sgd-digits", storage=optuna_url)
    assert len(loaded.trials) == 3 and loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    assert loaded.best_trial.value == study.best_value
    assert loaded.best_trial.params == study.best_params
    assert isinstance(
        loaded.best_trial.distributions["alpha"], optuna.distributions.FloatDistribution
    )
    steps = history[history.trial == loaded.best_trial.number].set_index("step")["value"]
    assert loaded.best_trial.intermediate_values == steps.to_dict()
    optuna.visualization.matplotlib.plot_optimization_history(loaded)
    optuna.visualization.matplotlib.plot_intermediate_values(loaded)
    plt.close("all")


def _own(**sections):
    return {"study": {"name": "own"}, "space": {"lr": [0.1, 0.2]}, **sections}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            _own(strategy={"name": "tpe", "popsize": 3}),
            "<config dict>: strategy.popsize: unknown key",
        ),
        (_own(architecture={"name": "vit"}), "<config dict>: architecture: a study of your own"),
        ({"study": {"name": "own"}}, "<config dict>: space: is required with trainable="),
        (_own(study={"name": "own", "metric": "acc"}), "study.metric: 'acc' is not a stored"),
        (_own(study={"name": "own", "metric": "val_f1"}), "study.direction: is required for"),
        (_own(space={"lr": {"low": 1}}), "<config dict>: space:"),
        (_own(strategy={"name": "darts"}), "strategy.name: 'darts' trains a supernet"),
        (
            _own(plugins={"modules": ["nowhere.py"]}),
            "<config dict>: plugins.modules.0: plugin file",
        ),
        (_own(study={"name": "own", "when": object()}), "<config dict>: not TOML-like data"),
    ],
)
def test_dict_configs_are_validated_before_anything_runs(tmp_path, config, message):
    with pytest.raises(autoplat.ConfigError, match=re.escape(message)):
        autoplat.search(
            config, trainable=lambda params, report: None, storage=f"sqlite:///{tmp_path}/s.db"
        )
    assert not (tmp_path / "s.db").exists()


def test_dict_configs_of_every_workflow_name_the_key(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    search = {
        "study": {"name": "s"},
        "architecture": {"name": "vitt"},
        "dataset": {"name": "digits"},
    }
    with pytest.raises(
        autoplat.ConfigError, match=r"<config dict>: architecture.name: unknown .*'vit'"
    ):
        autoplat.search(search, storage=url)
    al = {
        "study": {"name": "a"},
        "model": {"name": "mlp"},
        "dataset": {"name": "digits"},
        "al": {"acquisitions": ["random"], "initial": 20, "budgett": 40},
    }
    with pytest.raises(autoplat.ConfigError, match=r"<config dict>: al.budgett: unknown key"):
        autoplat.run_al(al, storage=url)
    with pytest.raises(autoplat.ConfigError, match=r"<config dict>: input: .*missing"):
        autoplat.curate({"study": {"name": "c"}, "scorers": {"x": {}}}, storage=url)
    with pytest.raises(TypeError, match="trainable must be a function"):
        autoplat.search(_own(), trainable="train.py", storage=url)
    with pytest.raises(autoplat.StoreError, match="no results store at"):
        autoplat.load_study("nope", storage=f"sqlite:///{tmp_path}/s.db")


SCORER = '''
import numpy as np
from autoplat import hookimpl
from autoplat.core.interfaces import Scorer

class Short(Scorer):
    """Keeps texts of at most 3 words."""
    name = "local-short"

    def score(self, chunk):
        words = np.array([len(t.split()) for t in chunk.text])
        return {"words": words, "keep": words <= 3}

@hookimpl
def register_scorers(register):
    register(Short)
'''


@pytest.fixture
def local_plugins():
    """Forget the local plugin modules a test loads."""
    registry = get_registry()
    names = set(registry.plugins)
    yield registry
    for name in set(registry.plugins) - names:
        registry.remove_plugin(name)


def test_local_plugin_modules_load_from_the_config_and_the_flag(
    tmp_path, local_plugins, capsys, monkeypatch
):
    folder = tmp_path / "project"
    (folder / "plugins").mkdir(parents=True)
    (folder / "plugins" / "short.py").write_text(SCORER)
    (folder / "plugins" / "broken.py").write_text("import not_a_module_anywhere\n")
    records = tmp_path / "texts.jsonl"
    texts = ["a cat", "one two three four", "dog", "a long caption of five"]
    records.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = folder / "cur.toml"
    config.write_text(
        textwrap.dedent(f"""
        [study]
        name = "local"
        [plugins]
        modules = ["plugins/broken.py", "plugins/short.py"]
        [input]
        path = "{records}"
        text = "text"
        [output]
        dir = "{tmp_path / "out"}"
        [scorers.local-short]
        """)
    )
    study = autoplat.curate(config, storage=f"sqlite:///{tmp_path}/s.db")
    info = study.curation()
    assert (info["records"], info["kept"], info["state"]) == (4, 2, "finished")
    assert Path(info["kept_path"]).is_file() and Path(info["scores_path"]).is_file()
    assert info["scorers"]["local-short"]["kept"] == 2
    # the broken module is reported by name; the other one works
    plugins = {p.name: p for p in local_plugins.plugins.values()}
    assert (
        plugins["broken"].status == "error"
        and "not_a_module_anywhere" in plugins["broken"].errors[0]
    )
    assert plugins["short"].registered == {"scorers": ["local-short"]}
    assert local_plugins.local == [
        str(folder / "plugins" / "broken.py"),
        str(folder / "plugins" / "short.py"),
    ]
    # `platform plugins --plugin` lists a module given on the command line
    (tmp_path / "other.py").write_text(SCORER.replace("local-short", "local-other"))
    monkeypatch.chdir(tmp_path)
    assert main(["plugins", "--plugin", "other.py", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["other"]["registered"] == {"scorers": ["local-other"]}
    assert listed["other"]["module"] == str(tmp_path / "other.py")
    assert listed["broken"]["status"] == "error"
    # a module that is not there: exit 2, one line naming it
    assert main(["plugins", "--plugin", "no_such_plugin_module"]) == 2
    assert "--plugin no_such_plugin_module: no module named" in capsys.readouterr().err


def test_a_multi_objective_study_becomes_a_multi_objective_optuna_study(tmp_path):
    import optuna

    from autoplat.core.store import OBJECTIVES_KEY, Store, TrialState

    store = Store(f"sqlite:///{tmp_path}/s.db")
    config = {
        "study": {"name": "mo"},
        "space": {"width": [16, 32, 64]},
        OBJECTIVES_KEY: [["val_accuracy", "maximize"], ["model_params", "minimize"]],
    }
    study = store.create_study("mo", config=json.dumps(config), metric="val_accuracy")
    points = [(16, 0.8, 100.0), (32, 0.9, 200.0), (64, 0.85, 400.0)]  # 64 is dominated
    for width, accuracy, size in points:
        trial = store.start_trial(study.id, {"width": width})
        store.add_metrics(trial.id, 1, {"val_accuracy": accuracy - 0.1, "model_params": size})
        store.add_metrics(trial.id, 2, {"val_accuracy": accuracy, "model_params": size})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=accuracy)
    store.finish_trial(store.start_trial(study.id, {"width": 16}).id, TrialState.PRUNED)
    view = autoplat.load_study("mo", storage=store.url)
    assert [t["params"]["width"] for t in view.pareto_front()] == [32, 16]
    url = f"sqlite:///{tmp_path}/optuna.db"
    view.to_optuna(url)
    loaded = optuna.load_study(study_name="mo", storage=url)
    assert [d.name for d in loaded.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert loaded.metric_names == ["val_accuracy", "model_params"]
    assert [t.state.name for t in loaded.trials] == ["COMPLETE"] * 3 + ["PRUNED"]
    assert [t.values for t in loaded.trials[:3]] == [[a, s] for _, a, s in points]
    assert sorted(t.params["width"] for t in loaded.best_trials) == [16, 32]
    assert loaded.trials[0].distributions["width"].choices == (16, 32, 64)
    with pytest.raises(autoplat.StoreError, match="already has a study 'mo'"):
        view.to_optuna(url)
    # copy to another store and delete the original: the copy reads the same
    copy = autoplat.copy_study("mo", f"sqlite:///{tmp_path}/copy.db", storage=store.url)
    assert copy.trials() == view.trials()
    assert autoplat.delete_study("mo", storage=store.url)["trials"] == 4
    assert [s["name"] for s in autoplat.list_studies(store.url)] == []
    assert [s["name"] for s in autoplat.list_studies(copy.store.url)] == ["mo"]


@pytest.mark.slow
def test_a_trainable_that_misreports_or_raises_fails_only_its_trial(tmp_path, ray_address):
    def train(params, report):
        if params["mode"] == "raises":
            raise RuntimeError("out of memory")
        if params["mode"] == "bad-name":
            report(1, {"accuracy": 0.5})
        if params["mode"] == "ok":
            report(1, {"val_accuracy": 0.5})
            report(2, {"val_accuracy": 0.75, "train_loss": 0.1})

    config = {
        "study": {"name": "modes", "trials": 4},
        "space": {"mode": ["ok", "bad-name", "raises", "silent"]},
        "strategy": {"name": "grid"},
    }
    study = autoplat.search(config, trainable=train, storage=f"sqlite:///{tmp_path}/s.db")
    frame = study.trials_dataframe().set_index("params_mode")
    assert frame.loc["ok", "state"] == "complete" and frame.loc["ok", "value"] == 0.75
    assert frame.loc["ok", "final_train_loss"] == 0.1 and frame.loc["ok", "epochs"] == 2
    errors = frame["error"].drop("ok").to_dict()
    assert set(frame["state"].drop("ok")) == {"fail"}
    assert errors["raises"] == "RuntimeError: out of memory"
    assert errors["bad-name"].startswith("ValueError: report: metric 'accuracy' would not be")
    assert errors["silent"] == (
        "ValueError: the trainable returned without calling report(epoch, metrics)"
    )
