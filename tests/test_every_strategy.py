"""Every registered ask/tell strategy runs a real study on the NB-201 table (those that no
other test runs through Ray here; random, grid, tpe, evolution and bohb run elsewhere)."""

from __future__ import annotations

import importlib.util

import pytest

from autoplat.core.config import load_config
from autoplat.core.interfaces import Strategy
from autoplat.core.registry import get_registry
from autoplat.core.store import Store, TrialState
from autoplat.core.study import run_study

ASK_TELL = sorted(
    name
    for name in get_registry().names("strategies")
    if issubclass(get_registry().get("strategies", name), Strategy)
)


def test_the_families_of_the_survey_are_all_registered() -> None:
    names = set(get_registry().names("strategies"))
    expected = {"random", "grid", "tpe", "evolution", "reinforce", "local", "bananas", "bohb"}
    assert expected <= set(ASK_TELL) and {"spos", "darts"} <= names - set(ASK_TELL)


OTHERS_RUN = {"random", "grid", "tpe", "evolution", "bohb"}  # test_search, test_bohb, ...


NNI = importlib.util.find_spec("nni") is not None  # optional: pip install 'autoplat[nni]'


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.skipif(
                n == "nni" and not NNI, reason="NNI 3.0 is optional: pip install 'autoplat[nni]'"
            ),
        )
        for n in ASK_TELL
        if n not in OTHERS_RUN
    ],
)
@pytest.mark.slow
def test_strategy_searches_the_table(name, write_config, tmp_path, ray_address) -> None:
    config = write_config(
        f'[study]\nname = "t-{name}"\ntrials = 4\n'
        f'[benchmark]\nname = "nb201"\n[strategy]\nname = "{name}"\n',
        name=name,
    )
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    study_id = run_study(load_config(config, get_registry()), store, address=ray_address)
    trials = store.trials(study_id)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(0.09 < t.value < 0.95 for t in trials)  # CIFAR-10: chance to the optimum
