"""Labeling a person can do (issue 19): the file oracle says what it waits for, takes
labels filled into the query file in place, stops after its timeout, and shows the
queried items (PNG thumbnails and a contact sheet for image pools, text for text pools);
the progress bars' ETA."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from autoplat.commands.workflows import Eta, PassEta
from autoplat.core.active_learning import (
    FileOracle,
    ImagePreview,
    LabelsTimeout,
    TextPreview,
    pool_preview,
)
from autoplat.core.errors import DataError
from autoplat.core.store import Store, TrialState
from autoplat.plugins.datasets.digits import Digits
from autoplat.testing import run_platform

DIGITS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")


@pytest.fixture(scope="module")
def digits():
    return Digits().load(Digits.Options(), seed=0)


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def fill_in_place(query: Path, label_of) -> list[int]:
    """What a person does in a spreadsheet: fill the label column and save (atomically)."""
    table = rows(query)
    for row in table:
        row["label"] = label_of(int(row["id"]))
    tmp = query.with_name(".edit")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    os.replace(tmp, query)
    return [int(row["id"]) for row in table]


def in_thread(fn, *args):
    """Run the oracle in a thread; returns (thread, result list, error list)."""
    result, error = [], []

    def run():
        try:
            result.append(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result, error


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- images -------------------------------------------------------------------------


def test_digits_pool_gets_thumbnails_and_a_contact_sheet_with_the_right_ids(tmp_path, digits):
    preview = pool_preview(digits)
    assert isinstance(preview, ImagePreview)
    ids = [5, 17, 3, 400, 99, 0, 12, 8, 1000, 77, 31, 64]
    sheet, thumbnails = preview.write(ids, tmp_path, "q")
    assert sheet == tmp_path / "q.sheet.png"
    assert thumbnails == {i: f"q.images/{i}.png" for i in ids}
    x = digits.train[0]
    for i in ids:
        with Image.open(tmp_path / thumbnails[i]) as image:
            assert image.format == "PNG" and image.size == (96, 96)  # 8x8 enlarged 12 times
            pixels = np.asarray(image)[::12, ::12]  # back to 8x8: the pool item itself
        assert np.array_equal(pixels, np.round(x[i, 0].numpy() * 255).astype(np.uint8))
    with Image.open(sheet) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size == (10 * 104, 2 * 116)  # 10 columns, 2 rows of 96+8 x 96+20
        grid = np.asarray(image.convert("L"))
    for n, i in enumerate(ids):  # each cell holds its id's image, in query order
        left, top = (n % 10) * 104 + 4, (n // 10) * 116 + 4
        with Image.open(tmp_path / thumbnails[i]) as thumb:
            assert np.array_equal(grid[top : top + 96, left : left + 96], np.asarray(thumb))
        caption = grid[top + 97 : top + 112, left : left + 96]
        assert caption.min() < 128  # the id is printed under it
    assert not list(tmp_path.rglob(".*tmp"))  # temp names renamed


def test_rgb_and_large_images_become_thumbnails(tmp_path):
    preview = ImagePreview(torch.rand(3, 3, 300, 200) * 4 - 2)  # not in [0, 1]: stretched
    sheet, thumbnails = preview.write([2], tmp_path, "big")
    with Image.open(tmp_path / thumbnails[2]) as image:
        assert image.mode == "RGB" and max(image.size) == 96
    with Image.open(sheet) as image:
        assert image.size == (64 + 8, 96 + 20)


def test_a_text_pool_puts_the_text_in_the_query(tmp_path):
    from autoplat.plugins.datasets.captions import encode, train_tokenizer

    texts = ["a red circle on the left", "two blue squares", "a small green triangle"]
    tokenizer = train_tokenizer(texts, 200, 0, "bpe")
    tokens = encode(tokenizer, texts, 40)
    splits = SimpleNamespace(
        train=(tokens, torch.zeros(3)),
        spec=SimpleNamespace(modality="text", tokenizer=tokenizer.to_str()),
    )
    preview = pool_preview(splits)
    assert isinstance(preview, TextPreview)
    oracle = FileOracle(tmp_path, "t", ("a", "b"), poll_seconds=0.01, timeout_seconds=0.05,
                        preview=preview)  # fmt: skip
    with pytest.raises(LabelsTimeout):
        oracle.label([2, 0], 0)
    query, _ = oracle.paths(0)
    assert [(r["id"], r["text"], r["label"]) for r in rows(query)] == [
        ("2", "a small green triangle", ""),
        ("0", "a red circle on the left", ""),
    ]


# -- waiting for a person -------------------------------------------------------------


def test_the_oracle_says_what_it_waits_for_and_takes_the_query_filled_in_place(tmp_path, digits):
    told: list[dict] = []
    oracle = FileOracle(tmp_path / "rel", "margin-seed0", DIGITS, poll_seconds=0.02,
                        preview=pool_preview(digits), notify=told.append)  # fmt: skip
    ids = [11, 4, 250]
    thread, result, error = in_thread(oracle.label, ids, 2)
    query, answer = oracle.paths(2)
    wait_until(lambda: told)
    assert told[0] == {
        "round": 2,
        "ids": 3,
        "query": str(query),
        "labels": str(answer),
        "images": str(tmp_path / "rel" / "margin-seed0-round002.sheet.png"),
        "status": "0 of 3 labeled",
    }
    assert Path(told[0]["query"]).is_absolute()
    assert [r["image"] for r in rows(query)] == [
        f"margin-seed0-round002.images/{i}.png" for i in ids
    ]
    for i in ids:
        assert (query.parent / f"margin-seed0-round002.images/{i}.png").exists()
    # half done: it says how far, and waits
    fill_in_place(query, lambda i: "7" if i == 11 else "")
    wait_until(lambda: told[-1]["status"] == "1 of 3 labeled")
    # a typo: said with its line, and it still waits for the fix
    fill_in_place(query, lambda i: "seven" if i == 4 else "7")
    wait_until(lambda: "label 'seven' is not a class" in told[-1]["status"])
    assert f"{query}:3" in told[-1]["status"] and thread.is_alive()
    fill_in_place(query, lambda i: str(i % 10))
    thread.join(10)
    assert not error and result == [[1, 4, 0]]
    assert not answer.exists()


def test_a_labels_file_still_works_and_a_half_filled_query_survives_a_resume(tmp_path):
    oracle = FileOracle(tmp_path, "e", ("cat", "dog"), poll_seconds=0.01, timeout_seconds=0.2)
    with pytest.raises(LabelsTimeout, match=r"no labels for round 0 after 0.2 s"):
        oracle.label([3, 1], 0)
    query, answer = oracle.paths(0)
    fill_in_place(query, lambda i: "dog" if i == 3 else "")
    with pytest.raises(LabelsTimeout):  # resumed: the same query; the person's work stays
        oracle.label([3, 1], 0)
    assert [(r["id"], r["label"]) for r in rows(query)] == [("3", "dog"), ("1", "")]
    answer.write_text("id,label\n1,cat\n3,dog\n")
    assert oracle.label([3, 1], 0) == [1, 0]
    # a query file of other ids (an earlier study) with labels is not overwritten
    other, _ = oracle.paths(1)
    other.write_text("id,label\n8,dog\n")
    with pytest.raises(DataError, match="holds labels for other ids"):
        oracle.label([3, 1], 1)
    assert other.read_text() == "id,label\n8,dog\n"


def test_jsonl_query_filled_in_place(tmp_path):
    oracle = FileOracle(tmp_path, "j", ("cat", "dog"), fmt="jsonl", poll_seconds=0.01)
    thread, result, _ = in_thread(oracle.label, [5, 2], 0)
    query, _ = oracle.paths(0)
    wait_until(query.exists)
    lines = [json.loads(line) for line in query.read_text().splitlines()]
    assert lines == [{"id": 5, "label": None}, {"id": 2, "label": None}]
    tmp = query.with_name(".edit")
    tmp.write_text("".join(json.dumps({**r, "label": r["id"] % 2}) + "\n" for r in lines))
    os.replace(tmp, query)
    thread.join(10)
    assert result == [[1, 0]]


# -- ETA ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def task(remaining, completed=0):
    return SimpleNamespace(remaining=remaining, completed=completed)


def test_eta_of_concurrent_trials_uses_finished_durations_and_concurrency():
    clock = Clock()
    eta = Eta(clock)
    eta.start(0), eta.start(1)
    assert eta.seconds(task(8)) is None  # nothing to go by yet
    eta.progress(0, 0.25)
    clock.now = 10.0
    assert eta.seconds(task(8)) == pytest.approx((2 * 30 + 6 * 40) / 2)  # from the share done
    clock.now = 60.0
    eta.end(0), eta.end(1)  # both took 60 s, two at a time
    eta.start(2), eta.start(3)
    clock.now = 90.0
    # 2 running (30 s left each) and 4 queued (60 s each), 2 at a time: 30 + 120 s
    assert eta.seconds(task(6)) == pytest.approx(150.0)
    assert Eta(clock).seconds(task(None)) is None  # no total (one-shot before it derived)
    # one worker: its first trial also started the worker (20 s), the others take 2 s
    eta = Eta(clock)
    for number, seconds in enumerate([20.0, 2.0, 2.0]):
        eta.start(number)
        clock.now += seconds
        eta.end(number)
    assert eta.seconds(task(10)) == pytest.approx(20.0)  # 10 x 2 s, not 10 x 8 s


def test_pass_eta_is_the_rate_of_this_pass():
    clock = Clock()
    eta = PassEta(0, clock)
    clock.now = 10.0
    assert eta.seconds(task(1000, completed=0)) is None
    assert eta.seconds(task(750, completed=250)) == pytest.approx(30.0)
    resumed = PassEta(4000, clock)  # a resumed pass: only what this run did counts
    clock.now = 20.0
    assert resumed.seconds(task(5000, completed=5000)) == pytest.approx(50.0)


# -- end to end: `platform al` and `platform curate` ------------------------------------

AL = """
[study]
name = "{name}"
seeds = 1

[model]
name = "mlp"
hidden = 32
depth = 1

[training]
epochs = 5
lr = 0.01

[dataset]
name = "digits"

[al]
acquisitions = ["margin"]
initial = 10
batch_size = 10
budget = {budget}

[oracle]
name = "file"
path = "labels"
poll_seconds = 0.2
{extra}
"""


class Platform:
    """`platform ARGS` running in the background; its stderr is read as it comes."""

    def __init__(self, *args: str, cwd: Path, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autoplat.cli", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        self.err: list[str] = []
        self.times: list[float] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.err.append(line)
            self.times.append(time.monotonic())

    def said(self) -> str:
        return "".join(self.err)

    def wait_for(self, what, seconds: float = 120) -> None:
        """Until ``what()`` holds (the process must not end before)."""
        deadline = time.monotonic() + seconds
        while not what():
            if self.process.poll() is not None:
                self.reader.join(5)
                pytest.fail(f"exited {self.process.returncode}:\n{''.join(self.err)}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"timed out:\n{''.join(self.err)}")
            time.sleep(0.1)

    def finish(self, seconds: float = 120) -> tuple[int, str, str]:
        out = self.process.stdout.read()
        code = self.process.wait(seconds)
        self.reader.join(5)
        return code, out, "".join(self.err)


def al_config(tmp_path: Path, name: str, budget: int, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(AL.format(name=name, budget=budget, extra=extra)))
    return path


@pytest.mark.slow
def test_a_person_labels_digits_rounds_from_the_images_in_place(tmp_path, digits, ray_address):
    """`platform al` with a file oracle: the message names the file (full path) and the
    number of ids, the contact sheet and thumbnails show the queried ids, labels filled
    into the query file in place move the rounds on, and the bar has its ETA column."""
    config = al_config(tmp_path, "person", budget=30)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    # wide enough for the status line's whole path (xdist's tmp paths are long)
    run = Platform("al", str(config), "--storage", url, cwd=tmp_path,
                   RAY_ADDRESS=ray_address, TTY_COMPATIBLE="1", COLUMNS="400")  # fmt: skip
    folder = tmp_path / "labels" / "person"
    y = digits.train[1]
    given = []
    for round_ in range(3):
        query = folder / f"margin-seed0-round{round_:03d}.query.csv"
        told = f"margin seed 0 round {round_}: label 10 ids: fill the label column of {query}"
        status = f"waiting for 10 labels: {query} (margin seed 0)"  # the status line
        run.wait_for(lambda told=told, status=status: told in run.said() and status in run.said())
        sheet = folder / f"margin-seed0-round{round_:03d}.sheet.png"
        assert f"images: {sheet}" in run.said()
        table = rows(query)
        ids = [int(r["id"]) for r in table]
        assert len(set(ids)) == 10 and not set(ids) & {i for i, _ in given}
        with Image.open(sheet) as image:
            image.load()
            assert image.format == "PNG" and image.size == (10 * 104, 116)
        for r in table:
            with Image.open(folder / r["image"]) as image:
                assert image.size == (96, 96) and r["image"].endswith(f"/{r['id']}.png")
        # the person reads each image and writes its digit (here: the true one)
        fill_in_place(query, lambda i: str(int(y[i])))
        given += [(i, int(y[i])) for i in ids]
    code, out, err = run.finish()
    assert code == 0, err
    assert "ETA" in err and "experiments: 1 complete" in out
    store = Store(url)
    study = store.get_study("person")
    rounds = store.al_rounds(study.id)
    stored = [
        pair
        for r in rounds
        for pair in zip(r.metrics_dict["queried"], r.metrics_dict["labels"], strict=True)
    ]
    assert stored == given
    (trial,) = store.trials(study.id)
    assert trial.state == TrialState.COMPLETE and trial.attrs_dict["labels_wanted"] is None


@pytest.mark.slow
def test_timeout_stops_resumably_and_the_summary_after_fixes_tells_the_state_now(
    tmp_path, digits, ray_address
) -> None:
    """Issue 19 point 4: a timeout, then a bad labels file, then the fix: the successful
    run says "1 complete", not the two earlier failures (the store keeps them)."""
    config = al_config(tmp_path, "late", budget=10, extra="timeout_seconds = 2")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    args = ("al", str(config), "--storage", url)
    first = run_platform(*args, cwd=tmp_path, RAY_ADDRESS=ray_address)
    assert first.returncode == 2, first.stderr
    query = tmp_path / "labels" / "late" / "margin-seed0-round000.query.csv"
    said = " ".join(first.stderr.split())
    timeout = "no labels for round 0 after 2 s ([oracle] timeout_seconds): fill the label"
    assert f"{timeout} column of {query}" in said
    assert f"platform al {config} --resume --storage {url}" in said
    assert "Traceback" not in first.stderr
    answer = query.with_name("margin-seed0-round000.labels.csv")
    answer.write_text("id,label\n999999,3\n")  # a typo
    second = run_platform(*args, "--resume", cwd=tmp_path, RAY_ADDRESS=ray_address)
    assert second.returncode == 2 and "id 999999 was not queried" in second.stderr
    assert "1 experiments failed" in second.stderr and "experiments: 1 fail" in second.stdout
    answer.unlink()
    ids = fill_in_place(query, lambda i: str(int(digits.train[1][i])))
    third = run_platform(*args, "--resume", cwd=tmp_path, RAY_ADDRESS=ray_address)
    assert third.returncode == 0, third.stderr
    assert "experiments: 1 complete" in third.stdout and "fail" not in third.stdout
    assert "failed" not in third.stderr
    store = Store(url)
    trials = store.trials(store.get_study("late").id)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.attrs_dict.get("superseded_by") for t in trials] == [1, 2, None]
    assert store.al_rounds(store.get_study("late").id)[0].metrics_dict["queried"] == ids


SLOW_SETUP = '''
import time

import numpy as np

from autoplat import hookimpl
from autoplat.core.interfaces import Options, Scorer


class SlowSetup(Scorer):
    """Keeps every record; its setup takes {seconds} s (as loading a model does)."""

    name = "t-slow-setup"
    two_pass = True

    class Options(Options):
        pass

    def setup(self, context) -> None:
        time.sleep({seconds})

    def fit(self, chunk) -> None:
        time.sleep(0.2)

    def state(self):
        return 0

    def load_state(self, state) -> None:
        pass

    def score(self, chunk):
        time.sleep(0.6)
        return {{"keep": np.ones(len(chunk), dtype=bool)}}


@hookimpl
def register_scorers(register):
    register(SlowSetup)
'''


@pytest.mark.slow
def test_curate_shows_its_bar_at_once_then_reading_input_and_its_eta(tmp_path):
    """Issue 19 point 6: the bar shows while the scorers set up (here 4 s), then "reading
    input", then both passes with an ETA."""
    plugin = tmp_path / "slow_setup.py"
    plugin.write_text(SLOW_SETUP.format(seconds=4))
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps({"text": f"caption {i}"}) + "\n" for i in range(40)))
    config = tmp_path / "c.toml"
    config.write_text(
        '[study]\nname = "slow"\n[input]\npath = "in.jsonl"\ntext = "text"\nchunk_size = 5\n'
        '[output]\ndir = "out"\n[scorers.t-slow-setup]\n'
    )
    start = time.monotonic()
    run = Platform("curate", "c.toml", "--plugin", str(plugin), "--storage",
                   f"sqlite:///{tmp_path / 'c.db'}", cwd=tmp_path,
                   TTY_COMPATIBLE="1", COLUMNS="150")  # fmt: skip
    run.wait_for(lambda: "setting up: t-slow-setup" in run.said(), seconds=60)
    first = run.times[0] - start
    assert "reading input" not in run.said()  # the setup (4 s) is still running
    run.wait_for(lambda: "first pass" in run.said(), seconds=60)
    assert run.times[-1] - start > first + 2  # the bar was up during the setup
    # 8 chunks of 0.6 s: after the first few, some seconds are left
    run.wait_for(lambda: re.search(r"ETA 0:00:0[1-9].*scoring: t-slow-setup", run.said()))
    code, out, err = run.finish()
    assert code == 0, err
    assert "ETA 0:00:00" in err and "first pass (counts, fits)" in err
    print(f"bar after {first:.2f} s (process start included)")


def test_curation_reports_reading_the_input_before_its_passes(tmp_path):
    """The ("fit", 0, 0) report: the CLI shows "reading input" while records are counted."""
    from autoplat.core.curation import load_curate_config, run_curation
    from autoplat.core.registry import get_registry
    from autoplat.testing import registered_plugin

    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps({"text": f"caption {i}"}) + "\n" for i in range(12)))
    config = tmp_path / "c.toml"
    config.write_text(
        f'[study]\nname = "r"\n[input]\npath = "{records}"\ntext = "text"\nchunk_size = 5\n'
        f'[output]\ndir = "{tmp_path / "out"}"\n[scorers.t-slow-setup]\n'
    )
    namespace: dict = {}
    exec(SLOW_SETUP.format(seconds=0).replace("time.sleep(0.", "time.sleep(0.0"), namespace)
    seen = []
    with registered_plugin(SimpleNamespace(register_scorers=namespace["register_scorers"]), "t"):
        resolved = load_curate_config(config, get_registry())
        run_curation(
            resolved, Store(f"sqlite:///{tmp_path / 'c.db'}"), progress=lambda *a: seen.append(a)
        )
    assert seen[:3] == [("fit", 0, 0), ("fit", 0, 12), ("fit", 5, 12)]
    assert seen[-1] == ("score", 12, 12)
