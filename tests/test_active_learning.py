"""The active-learning loop: initial sets, oracles, model outputs, rounds and resume."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from autoplat.core.active_learning import (
    Acquisition,
    FileOracle,
    LoopSettings,
    SimulatedOracle,
    aulc,
    initial_indices,
    model_outputs,
    round_sizes,
    run_experiment,
)
from autoplat.core.al_study import learning_curves
from autoplat.core.errors import DataError
from autoplat.core.interfaces import Splits
from autoplat.core.store import SCHEMA_VERSION, ALRound, Store
from autoplat.core.training import train_classification
from autoplat.plugins.architectures.vit import ViT
from autoplat.plugins.datasets.digits import Digits

VIT = {"depth": 1, "width": 16, "heads": 2, "patch_size": 4, "dropout": 0.2}
TRAIN = {"epochs": 3, "lr": 0.005, "batch_size": 32, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def digits() -> Splits:
    return Digits().load(Digits.Options(), seed=0)


class SmallestMaxProb(Acquisition):
    """Least confidence, ties broken by ``rng`` (a test acquisition on real outputs)."""

    name = "test-least-confidence"
    needs = ("probs", "embeddings", "labeled_embeddings", "mc_probs")

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Size]] = []

    def select(self, outputs, k, rng):
        self.seen.append({key: value.shape for key, value in outputs.items()})
        scores = outputs["probs"].max(dim=1).values
        shuffled = torch.randperm(len(scores), generator=rng)
        return shuffled[torch.argsort(scores[shuffled], stable=True)[:k]]


def vit_trainer(splits: Splits):
    arch = ViT()

    def train(labeled, labels, seed, model):
        if model is None:
            torch.manual_seed(seed)
            model = arch.build(VIT, splits.spec)
        data = Splits(
            (splits.train[0][labeled], torch.tensor(labels)), splits.val, splits.test, splits.spec
        )
        return model, train_classification(model, data, TRAIN, lambda *_: None, seed)

    return train


def test_initial_set_is_seeded_and_stratified_covers_every_class() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    strat = initial_indices(y, 9, seed=3, stratified=True)
    assert sorted(y[strat].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert strat == initial_indices(y, 9, seed=3, stratified=True)
    assert strat != initial_indices(y, 9, seed=4, stratified=True)
    plain = initial_indices(y, 20, seed=3, stratified=False)
    assert len(set(plain)) == 20 and plain == initial_indices(y, 20, seed=3, stratified=False)
    # a class smaller than its share: the others fill the set
    assert len(set(initial_indices(y, 30, seed=0, stratified=True))) == 30


def test_round_sizes_and_aulc() -> None:
    assert round_sizes(LoopSettings(initial=20, batch_size=10, budget=55), 1000) == [
        20,
        30,
        40,
        50,
        55,
    ]
    assert round_sizes(LoopSettings(initial=20, batch_size=10, rounds=2), 1000) == [20, 30, 40]
    assert round_sizes(LoopSettings(initial=5, batch_size=10, budget=100), 12) == [5, 12]
    assert aulc([20, 40, 60], [0.5, 0.7, 0.7]) == pytest.approx((0.6 * 20 + 0.7 * 20) / 40)
    assert aulc([10], [0.4]) == 0.4


def test_learning_curves_average_seeds_and_skip_partial_ones_in_aulc() -> None:
    def row(acq, seed, rnd, n, acc):
        return ALRound(
            study_id=1,
            acquisition=acq,
            seed=seed,
            round=rnd,
            n_labeled=n,
            metrics=json.dumps({"test_accuracy": acc}),
        )

    rounds = [row("a", 0, 0, 10, 0.5), row("a", 0, 1, 20, 0.7)]
    rounds += [row("a", 1, 0, 10, 0.3), row("a", 1, 1, 20, 0.9), row("a", 2, 0, 10, 0.4)]
    curve = learning_curves(rounds)["a"]
    assert curve["labels"] == [10, 20]
    assert curve["mean"] == pytest.approx([0.4, 0.8])
    assert curve["seeds"] == [3, 2]
    assert curve["complete_seeds"] == 2
    assert curve["aulc"][0] == pytest.approx(0.6)  # seeds 0 and 1: 0.6 each


def write_answer(path: Path, rows: list[str]) -> None:
    path.write_text("\n".join(["id,label", *rows]) + "\n")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["1,cat", "2,dog", "9,cat"], "id 9 was not queried"),
        (["1,cat", "1,dog", "2,cat"], "id 1 is labeled twice"),
        (["1,cat"], "1 queried ids have no label (2)"),
        (["1,cat", "2,cow"], "label 'cow' is not a class"),
        (["1,cat", "2,"], "the label is empty"),
        (["1,cat", "x,dog"], "id 'x' is not an integer"),
        (["1,cat", "2,7"], "label '7' is not a class"),
    ],
)
def test_file_oracle_refuses_bad_answers_with_file_and_line(tmp_path, rows, message) -> None:
    oracle = FileOracle(tmp_path, "exp", ("cat", "dog"), poll_seconds=0.01, timeout_seconds=1)
    query, answer = oracle.paths(0)
    write_answer(answer, rows)
    with pytest.raises(DataError, match=r"exp-round000\.labels\.csv") as info:
        oracle.label([1, 2], 0)
    assert message in str(info.value)
    assert answer.read_text().count("\n") == len(rows) + 1  # the answer is left as it was


def test_file_oracle_round_trip_csv_and_jsonl(tmp_path) -> None:
    oracle = FileOracle(tmp_path, "exp", ("cat", "dog"), poll_seconds=0.01, timeout_seconds=0.2)
    with pytest.raises(DataError, match=r"no labels for round 1 after 0.2 s .*round001.query"):
        oracle.label([4, 2], 1)
    query, answer = oracle.paths(1)
    assert query.read_text().splitlines() == ["id,label", "4,", "2,"]
    write_answer(answer, ["2,dog", "4,0"])  # names or indices, any order
    assert oracle.label([4, 2], 1) == [0, 1]

    sourced = FileOracle(tmp_path, "s", ("cat", "dog"), poll_seconds=0.01, timeout_seconds=0.1,
                         sources=[f"img/{i}.png" for i in range(6)])  # fmt: skip
    with pytest.raises(DataError, match="no labels"):
        sourced.label([4, 2], 0)
    query, answer = sourced.paths(0)
    assert query.read_text().splitlines() == ["id,source,label", "4,img/4.png,", "2,img/2.png,"]
    answer.write_text(query.read_text().replace(".png,", ".png,dog"))  # a person fills it in
    assert sourced.label([4, 2], 0) == [1, 1]

    jsonl = FileOracle(tmp_path, "j", ("cat", "dog"), fmt="jsonl", poll_seconds=0.01)
    query, answer = jsonl.paths(0)
    answer.write_text('{"id": 3, "label": "dog"}\n{"id": 5, "label": 0}\n')
    assert jsonl.label([5, 3], 0) == [0, 1]
    answer.write_text('{"id": 3, "label": "dog"}\nnot json\n')
    with pytest.raises(DataError, match=r"j-round000\.labels\.jsonl:2: not valid JSON"):
        jsonl.label([5, 3], 0)


def test_model_outputs_shapes_and_mc_dropout(digits: Splits, one_torch_thread) -> None:
    torch.manual_seed(0)
    model = ViT().build(VIT, digits.spec)
    x = digits.train[0]
    needs = ("probs", "mc_probs", "embeddings", "labeled_embeddings")
    out = model_outputs(model, needs, x[:50], x[50:60], mc_samples=4, seed=1)
    assert out["probs"].shape == (50, 10)
    assert torch.allclose(out["probs"].sum(1), torch.ones(50))
    assert out["mc_probs"].shape == (4, 50, 10)
    assert not torch.allclose(out["mc_probs"][0], out["mc_probs"][1])  # dropout is on
    assert out["embeddings"].shape == (50, 16) and out["labeled_embeddings"].shape == (10, 16)
    again = model_outputs(model, needs, x[:50], x[50:60], mc_samples=4, seed=1)
    assert torch.equal(again["mc_probs"], out["mc_probs"])
    assert not model.training  # left in eval mode
    no_dropout = ViT().build({**VIT, "dropout": 0.0}, digits.spec)
    with pytest.raises(ValueError, match="MC-dropout needs a model with dropout"):
        model_outputs(no_dropout, ("mc_probs",), x[:5], x[5:6], mc_samples=2, seed=0)


def test_rounds_report_and_resume_continues_exactly(digits: Splits, one_torch_thread) -> None:
    settings = LoopSettings(initial=10, batch_size=5, budget=25, mc_samples=2)
    acquisition = SmallestMaxProb()
    train = vit_trainer(digits)
    full: list[dict] = []
    oracle = SimulatedOracle(digits.train[1])
    run_experiment(digits, acquisition, oracle, settings, 7, train, full.append)
    assert [r["n_labeled"] for r in full] == [10, 15, 20, 25]
    assert [r["round"] for r in full] == [0, 1, 2, 3] and full[-1]["finished"] == 1
    queried = [i for r in full for i in r["queried"]]
    assert len(set(queried)) == 25
    assert all(r["labels"] == digits.train[1][r["queried"]].tolist() for r in full)
    assert acquisition.seen[0]["labeled_embeddings"] == (10, 16)
    assert acquisition.seen[0]["probs"][0] == len(digits.train[1]) - 10

    resumed: list[dict] = []
    done = [{"queried": r["queried"], "labels": r["labels"]} for r in full[:2]]
    run_experiment(digits, SmallestMaxProb(), oracle, settings, 7, train, resumed.append, done)
    assert [r["round"] for r in resumed] == [2, 3]
    for a, b in zip(full[2:], resumed, strict=True):
        assert a["queried"] == b["queried"] and a["test_accuracy"] == b["test_accuracy"]


def test_store_migrates_a_version_1_file(tmp_path) -> None:
    path = tmp_path / "old.db"
    Store(f"sqlite:///{path}").create_study("s", kind="search")
    with sqlite3.connect(path) as db:  # make it look like a version-1 file
        db.execute("DROP TABLE al_rounds")
        db.execute(
            "CREATE TABLE al_rounds (id INTEGER PRIMARY KEY, study_id INTEGER, acquisition "
            "TEXT, round INTEGER, n_labeled INTEGER, metrics TEXT)"
        )
        db.execute("ALTER TABLE trials DROP COLUMN attrs")
        db.execute("UPDATE schema_version SET version = 1")
    store = Store(f"sqlite:///{path}")
    assert [s.name for s in store.studies()] == ["s"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    store.add_al_round(ALRound(study_id=1, acquisition="a", seed=2, round=0, n_labeled=5))
    assert store.al_rounds(1)[0].seed == 2
    trial = store.start_trial(1, {"x": 1})
    store.set_trial_attrs(trial.id, derived=[{"x": 2}])
    assert store.trials(1)[0].attrs_dict == {"derived": [{"x": 2}]}
