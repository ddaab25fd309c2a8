"""BOHB: TPE proposals under HyperBand budgets; trials stopped early still inform TPE.
Without budgets (one fidelity) it is ``tpe-random``."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pytest
from optuna.trial import TrialState as OptunaState
from ray.tune.schedulers import FIFOScheduler, HyperBandForBOHB

from autoplat.cli import main
from autoplat.core.config import load_config
from autoplat.core.hookspecs import Register, hookimpl
from autoplat.core.registry import get_registry
from autoplat.core.space import SearchSpace
from autoplat.core.store import Store, TrialState
from autoplat.core.study import make_scheduler, strategy_searcher
from autoplat.strategies.search.bohb import BOHB, TPERandom
from autoplat.strategies.search.tpe import TPESearch
from autoplat.testing import StrategyContract, registered_plugin

SPACE = SearchSpace.from_dict(
    {
        "depth": [1, 2, 3],
        "act": ["relu", "gelu"],
        "lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "epochs": 3,
    }
)


class TestBOHB(StrategyContract):
    @pytest.fixture
    def strategy_cls(self):
        return BOHB


class TestBOHBPastStartup(TestBOHB):
    @pytest.fixture
    def options(self):  # TPE's model proposes after 4 trials
        return BOHB.Options(n_startup_trials=4)


def drive(strategy: BOHB, n: int) -> list[dict[str, Any]]:
    """Ask ``n`` times; report one epoch, then tell every 3rd trial pruned, others a value."""
    proposals = []
    for i in range(n):
        params = strategy.ask()
        proposals.append(params)
        strategy.report(params, 1, 0.1 * params["depth"])
        if i % 3 == 0:
            strategy.prune(params)
        else:
            strategy.tell(params, params["depth"] - abs(params["lr"] - 0.01))
    return proposals


def test_same_seed_same_proposals_with_pruned_trials():
    first = drive(BOHB(SPACE, seed=5, options=BOHB.Options(n_startup_trials=4)), 24)
    again = drive(BOHB(SPACE, seed=5, options=BOHB.Options(n_startup_trials=4)), 24)
    other = drive(BOHB(SPACE, seed=6, options=BOHB.Options(n_startup_trials=4)), 24)
    assert first == again
    assert first != other


def test_random_fraction_is_uniform_sampling_or_plain_tpe():
    rng = random.Random(3)
    expected = []
    for _ in range(12):
        rng.random()  # the coin: always "random" at random_fraction = 1
        expected.append(SPACE.sample(rng))
    uniform = BOHB(SPACE, seed=3, options=BOHB.Options(random_fraction=1, n_startup_trials=0))
    assert drive(uniform, 12) == expected

    options = {"n_startup_trials": 4}
    tpe = drive(TPESearch(SPACE, seed=3, options=TPESearch.Options(**options)), 16)
    no_random = BOHB(SPACE, seed=3, options=BOHB.Options(random_fraction=0, **options))
    assert drive(no_random, 16) == tpe


def test_pruned_trials_keep_their_intermediate_values_and_failures_stay_failed():
    strategy = BOHB(SPACE, seed=0)
    pruned, failed, done = strategy.ask(), strategy.ask(), strategy.ask()
    strategy.report(pruned, 1, 0.3)
    strategy.report(pruned, 2, 0.5)
    strategy.report(pruned, 1, 0.9)  # a resumed trial repeats its first epochs: skipped
    strategy.report(failed, 1, 0.2)
    strategy.report(done, 1, 0.4)
    strategy.prune(pruned)
    strategy.tell(failed, None)
    strategy.tell(done, 0.8)
    trials = strategy.study.trials
    assert [t.state for t in trials] == [OptunaState.PRUNED, OptunaState.FAIL, OptunaState.COMPLETE]
    assert trials[0].intermediate_values == {1: 0.3, 2: 0.5}
    assert trials[0].value == 0.5  # Optuna ranks a pruned trial by its last value
    assert trials[1].intermediate_values == {1: 0.2} and trials[1].value is None
    assert trials[2].value == 0.8


def test_searcher_tells_pruned_failed_and_finished_apart_and_skips_paused():
    strategy = BOHB(SPACE, seed=0)
    searcher = strategy_searcher(strategy, ["val_accuracy"])
    assert searcher.set_max_concurrency(2)  # the searcher limits concurrency itself
    assert searcher.suggest("a") and searcher.suggest("b")
    assert searcher.suggest("c") is None  # two running
    searcher.on_trial_result("a", {"val_accuracy": 0.4, "epoch": 1})
    searcher.on_pause("a")  # HyperBandForBOHB parks it at its budget
    assert searcher.suggest("c")
    searcher.on_unpause("a")
    assert searcher.suggest("d") is None
    searcher.on_trial_result("c", {"val_accuracy": 0.6, "epoch": 1})
    searcher.on_trial_complete("a", {"val_accuracy": 0.4, "epoch": 1})  # stopped early
    searcher.on_trial_complete("b", None, error=True)
    searcher.on_trial_complete("c", {"val_accuracy": 0.7, "epoch": 3, "finished": 1})
    assert searcher.suggest("d")
    searcher.on_trial_result("d", {"val_accuracy": 0.9, "epoch": 3, "finished": 1})
    searcher.on_pause("d")  # paused on its last epoch, then stopped: Tune sends no result
    searcher.on_trial_complete("d")
    trials = strategy.study.trials
    assert [t.state for t in trials] == [
        OptunaState.PRUNED,
        OptunaState.FAIL,
        OptunaState.COMPLETE,
        OptunaState.COMPLETE,
    ]
    assert [t.value for t in trials] == [0.4, None, 0.7, 0.9]
    assert trials[0].intermediate_values == {1: 0.4}
    assert trials[2].intermediate_values == {1: 0.6, 3: 0.7}


def test_bohb_defaults_to_hyperband_for_bohb(write_config, capsys):
    resolved = load_config(write_config(strategy="bohb", epochs=3), get_registry())
    assert resolved.config.scheduler.name == "hyperband_bohb"
    assert isinstance(make_scheduler(resolved), HyperBandForBOHB)

    chosen = write_config(strategy="bohb", extra='\n[scheduler]\nname = "fifo"\n')
    assert isinstance(make_scheduler(load_config(chosen, get_registry())), FIFOScheduler)
    assert load_config(write_config(strategy="tpe"), get_registry()).config.scheduler.name == "fifo"

    searched = write_config(strategy="bohb")
    searched.write_text(searched.read_text().replace("epochs = 2", "epochs = [2, 4]"))
    assert main(["search", str(searched)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert f"{searched}:" in error and "space.epochs" in error
    assert "scheduler 'hyperband_bohb' runs trials up to a fixed number of epochs" in error


TABLE = """
[study]
name = "table"
trials = 4
[benchmark]
name = "nb201"
[strategy]
name = "{strategy}"
"""


def test_tpe_random_is_bohb_without_budgets(write_config):
    assert issubclass(BOHB, TPERandom) and BOHB.needs_budgets
    assert BOHB.single_fidelity == "tpe-random" and TPERandom.name == "tpe-random"
    assert not getattr(TPERandom, "needs_budgets", False)
    options = {"n_startup_trials": 4}
    same = drive(TPERandom(SPACE, seed=5, options=TPERandom.Options(**options)), 16)
    assert same == drive(BOHB(SPACE, seed=5, options=BOHB.Options(**options)), 16)
    resolved = load_config(write_config(strategy="tpe-random", epochs=3), get_registry())
    assert resolved.strategy_cls is TPERandom and resolved.config.scheduler.name == "fifo"
    table = load_config(write_config(TABLE.format(strategy="tpe-random")), get_registry())
    assert table.strategy_cls is TPERandom and table.config.scheduler.name == "fifo"


class RecordingBOHB(BOHB):
    """BOHB that keeps every instance, so a test can read the Optuna study of a search."""

    name = "bohb-recording"
    made: ClassVar[list[BOHB]] = []

    def setup(self) -> None:
        super().setup()
        self.made.append(self)


class RecordingPlugin:
    @hookimpl
    def register_strategies(self, register: Register) -> None:
        register(RecordingBOHB)


@pytest.mark.slow
def test_search_under_hyperband_stops_trials_and_tpe_sees_them(write_config, tmp_path, ray_address):
    # epochs 3, reduction factor 3: HyperBandForBOHB fills its largest bracket first
    # (3 trials at 1 epoch, the best goes on to 3), then a bracket of 2 full trials.
    url = f"sqlite:///{tmp_path}/bohb.db"
    path = write_config(name="bohb", trials=5, epochs=3, strategy="bohb-recording")
    with registered_plugin(RecordingPlugin(), "bohb-recording"):
        code = main(["search", str(path), "--storage", url, "--address", ray_address])
    assert code == 0
    store = Store(url)
    trials = store.trials(store.get_study("bohb").id)
    steps = {t.number: sorted(store.metrics(t.id)) for t in trials}
    states = [t.state for t in trials]
    assert states.count(TrialState.PRUNED) == 2 and states.count(TrialState.COMPLETE) == 3
    assert all(steps[t.number] == [1] for t in trials if t.state == TrialState.PRUNED)
    assert all(steps[t.number] == [1, 2, 3] for t in trials if t.state == TrialState.COMPLETE)

    optuna_trials = {t.params["lr"]: t for t in RecordingBOHB.made[-1].study.trials}
    assert len(optuna_trials) == 5
    for trial in trials:
        recorded = optuna_trials[trial.params_dict["lr"]]
        expected = OptunaState.PRUNED if trial.state == TrialState.PRUNED else OptunaState.COMPLETE
        assert recorded.state == expected
        metrics = store.metrics(trial.id)
        assert recorded.intermediate_values == {
            step: metrics[step]["val_accuracy"] for step in steps[trial.number]
        }
        assert recorded.value == pytest.approx(trial.value)
