"""A search's same-run baseline (``[baseline]``): validated with the config (exit 2, one
line), fitted once per study on the study's own split, stored with the study, and shown as
the last row of `platform search`'s and `platform show`'s leaderboard with the best trial's
margin over it."""

from __future__ import annotations

import json

import pytest
from sklearn.svm import SVC

from autoplat.cli import main
from autoplat.core.baseline import fit_baseline
from autoplat.core.config import load_config
from autoplat.core.database import BASELINE_KEY
from autoplat.core.errors import ConfigError
from autoplat.core.registry import get_registry
from autoplat.core.store import Store
from autoplat.core.study import load_data
from autoplat.testing import run_platform


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('model = "xgboost"', "baseline.model: Input should be 'logistic-regression'"),
        ('model = "svc"\nn_estimators = 10', "baseline model 'svc' takes no option"),
        ('model = "random-forest"\nn_estimators = 0', "baseline.n_estimators"),
    ],
)
def test_a_bad_baseline_is_one_line_and_exit_2(write_config, capsys, section, message) -> None:
    path = write_config(extra=f"\n[baseline]\n{section}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, get_registry())
    assert main(["search", str(path), "--storage", f"sqlite:///{path.parent}/b.db"]) == 2
    error = capsys.readouterr().err.strip()
    assert f"{path}:" in error and message in " ".join(error.split())
    assert "Traceback" not in error


def test_a_benchmark_study_takes_no_baseline(tmp_path) -> None:
    path = tmp_path / "table.toml"
    path.write_text(
        '[study]\nname = "t"\n[benchmark]\nname = "nas-bench-201"\n'
        '[strategy]\nname = "random"\n[baseline]\nmodel = "svc"\n'
    )
    with pytest.raises(ConfigError, match="no data to fit a baseline on; remove"):
        load_config(path, get_registry())


def test_the_baseline_is_fitted_on_the_studys_own_split(write_config) -> None:
    resolved = load_config(
        write_config(extra='\n[baseline]\nmodel = "svc"\nC = 2.0\n'), get_registry()
    )
    splits = load_data(resolved)
    baseline = fit_baseline(resolved.config.baseline, splits, 0, resolved.path)
    # the reference: scikit-learn by hand on the same flattened tensors
    x = {
        k: getattr(splits, k)[0].reshape(len(getattr(splits, k)[0]), -1).numpy()
        for k in ("train", "val", "test")
    }
    y = {k: getattr(splits, k)[1].numpy() for k in ("train", "val", "test")}
    svc = SVC(C=2.0).fit(x["train"], y["train"])
    assert baseline["model"] == "svc" and baseline["options"] == {"C": 2.0}
    assert baseline["val_accuracy"] == pytest.approx(svc.score(x["val"], y["val"]))
    assert baseline["test_accuracy"] == pytest.approx(svc.score(x["test"], y["test"]))
    assert 0.9 < baseline["test_accuracy"] < 1.0  # digits: a real fit, not chance


def test_most_frequent_scores_the_majority_class(write_config) -> None:
    resolved = load_config(
        write_config(extra='\n[baseline]\nmodel = "most-frequent"\n'), get_registry()
    )
    splits = load_data(resolved)
    baseline = fit_baseline(resolved.config.baseline, splits, 0, resolved.path)
    majority = splits.train[1].bincount().argmax()
    assert baseline["val_accuracy"] == pytest.approx(
        float((splits.val[1] == majority).float().mean())
    )


@pytest.mark.slow
def test_search_stores_the_baseline_and_show_ranks_it(write_config, tmp_path, ray_address):
    path = write_config(
        name="based", trials=2, extra='\n[baseline]\nmodel = "logistic-regression"\n'
    )
    url = f"sqlite:///{tmp_path}/based.db"
    searched = run_platform("search", str(path), "--storage", url, "--address", ray_address)
    assert searched.returncode == 0, searched.stderr[-2000:]
    assert "[baseline]" in searched.stdout and "vs baseline" in searched.stdout

    study = Store(url).get_study("based")
    stored = json.loads(study.config)[BASELINE_KEY]
    resolved = load_config(path, get_registry())
    again = fit_baseline(resolved.config.baseline, load_data(resolved), 0, path)
    assert stored["test_accuracy"] == pytest.approx(again["test_accuracy"])  # the same split

    shown = run_platform("show", "based", "--storage", url, COLUMNS="200")
    assert shown.returncode == 0, shown.stderr[-2000:]
    row = next(line for line in shown.stdout.splitlines() if "[baseline]" in line)
    assert "model=logistic-regression" in row and f"{stored['test_accuracy']:.4f}" in row
    caption = next(line for line in shown.stdout.splitlines() if "vs baseline" in line)
    best = Store(url).best_trial(study)
    margin = best.value - stored["val_accuracy"]
    assert f"{margin:+.4f} val_accuracy" in caption
