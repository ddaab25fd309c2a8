"""`platform curate` under faults: kill -9, Ctrl-C and SIGTERM of a real driver, the on-disk
states a crash in the merge leaves, and crafted or damaged state files.

Each resumed run must equal an uninterrupted one (row counts and content); a state that
cannot be repaired is one line naming the file and the fix (exit 2), with nothing deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from autoplat.cli import main
from autoplat.core.curation import _Run, load_curate_config, run_curation
from autoplat.core.registry import get_registry
from autoplat.core.store import Store
from autoplat.testing import PLATFORM

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ALT_TEXTS = Path(__file__).parents[1] / "examples" / "data" / "alt_texts_10k.parquet"
RECORDS, CHUNK = 1200, 150  # 8 chunks
DB = "sqlite:///db.sqlite"  # relative: each case runs in its own folder

# A third-party scorer (a real installed distribution) that holds `platform curate` at
# one chunk when GATE_AT says so, until the test signals it; GATE_LOG records each chunk.
GATE = """
import os
import time
from pathlib import Path

import numpy as np

from autoplat import hookimpl
from autoplat.core.curation import state_value
from autoplat.core.interfaces import Scorer


class Gate(Scorer):
    name = "t-gate"
    two_pass = True

    def setup(self, context):
        self.seen = 0

    def fit(self, chunk):
        self._hold("fit", chunk)
        self.seen += len(chunk)

    def state(self):
        return {"seen": self.seen}

    def load_state(self, state):
        self.seen = state_value(state, "seen", int)

    def score(self, chunk):
        self._hold("score", chunk)
        return {"seen": np.full(len(chunk), self.seen, dtype=np.int64)}

    def _hold(self, phase, chunk):
        if os.environ.get("GATE_LOG"):
            with open(os.environ["GATE_LOG"], "a") as log:
                log.write(f"{phase} {int(chunk.ids[0])}\\n")
        if os.environ.get("GATE_AT") == f"{phase} {int(chunk.ids[0])}":
            Path(os.environ["GATE_FILE"]).write_text("held")
            time.sleep(300)


@hookimpl
def register_scorers(register):
    register(Gate)
"""


def config(gate: bool) -> str:
    """Built-in scorers with a saved fit (metaclip's counts, dedup's arrays) on 1,200
    real alt-texts; with ``gate``, the holding scorer too. Paths relative to the case."""
    return textwrap.dedent(
        f"""
        [study]
        name = "faults"
        [input]
        path = "in.parquet"
        text = "TEXT"
        chunk_size = {CHUNK}
        [output]
        dir = "out"
        [embedder]
        name = "hashing"
        [scorers.metaclip]
        metadata = "meta.json"
        t = 40
        [scorers.dedup]
        threshold = 0.9
        """
    ) + ("[scorers.t-gate]\n" if gate else "")


def new_case(folder: Path, gate: bool = False) -> Path:
    folder.mkdir(parents=True)
    pq.write_table(pq.read_table(ALT_TEXTS).slice(0, RECORDS), folder / "in.parquet")
    entries = ["a", "the", "of", "and", "with", "for", "photo", "black", "white", "new"]
    (folder / "meta.json").write_text(json.dumps(entries))
    (folder / "c.toml").write_text(config(gate))
    return folder


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its content."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_same_outputs(case: Path, base: Path) -> None:
    """The outputs equal an uninterrupted run's, row for row; the parts are gone."""
    for name in ("scores.parquet", "kept.parquet"):
        got, want = pq.read_table(case / "out" / name), pq.read_table(base / "out" / name)
        assert got.num_rows == want.num_rows, name
        assert got.equals(want), name
    state = json.loads((case / "out" / "state.json").read_text())
    assert state == json.loads((base / "out" / "state.json").read_text())
    assert state["phase"] == "done"
    assert not (case / "out" / "parts").exists()


# -- in-process cases: the on-disk states a crash leaves ------------------------------------
@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[Path, Path]:
    """``(base, ready)``: an uninterrupted run, and a run stopped just before its merge
    (every part written, the state says "merge")."""
    root = tmp_path_factory.mktemp("curate-faults")
    base, ready = new_case(root / "base"), new_case(root / "ready")
    with contextlib.chdir(base):
        run_curation(load_curate_config("c.toml", get_registry()), Store(DB))
    with contextlib.chdir(ready):
        run = _Run(load_curate_config("c.toml", get_registry()), Store(DB), resume=False)
        run.fit(lambda *a: None)
        run.score(lambda *a: None, lambda state: None)
    assert json.loads((ready / "out" / "state.json").read_text())["phase"] == "merge"
    return base, ready


def copy_case(ready: Path, tmp_path: Path) -> Path:
    case = tmp_path / "case"
    shutil.copytree(ready, case)
    return case


def set_state(case: Path, **changes) -> None:
    path = case / "out" / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def half(path: Path, into: Path) -> None:
    """A file cut in the middle, as a crash while writing it leaves."""
    data = path.read_bytes()
    into.write_bytes(data[: len(data) // 2])


def part_files(case: Path) -> list[Path]:
    return sorted((case / "out" / "parts").glob("*"))


def crash(case: Path, base: Path, name: str) -> None:
    """Leave ``case`` (a run stopped before its merge) as a crash at ``name`` would."""
    out, done = case / "out", base / "out"
    if name == "mid-merge: scores half-written":
        half(done / "scores.parquet", out / "scores.parquet.tmp")
    if name == "mid-merge: kept half-written":
        shutil.copy(done / "scores.parquet", out)
        half(done / "kept.parquet", out / "kept.parquet.tmp")
    if name.startswith(("merged", "done", "old")):
        shutil.copy(done / "scores.parquet", out)
        shutil.copy(done / "kept.parquet", out)
    if name.startswith("done"):
        set_state(case, phase="done")
    if name.endswith("half of the parts deleted"):
        for path in part_files(case)[::2]:
            path.unlink()
    if name.endswith("every part deleted"):
        for path in part_files(case):
            path.unlink()
    if name == "old: merged, state not updated, parts folder gone":
        shutil.rmtree(out / "parts")


CRASHES = [
    "before the merge",
    "mid-merge: scores half-written",
    "mid-merge: kept half-written",
    "merged, state not updated",
    "done, half of the parts deleted",
    "done, every part deleted",
    # what the old order (delete the parts, then record "done") left: issue 16, point 2
    "old: merged, state not updated, half of the parts deleted",
    "old: merged, state not updated, parts folder gone",
]


@pytest.mark.parametrize("name", CRASHES)
def test_resume_repairs_every_crash_point_of_the_merge(cases, tmp_path, name, capsys):
    base, ready = cases
    case = copy_case(ready, tmp_path)
    crash(case, base, name)
    with contextlib.chdir(case):
        assert main(["curate", "c.toml", "--resume", "--storage", DB]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert_same_outputs(case, base)
    assert not list((case / "out").glob("*.tmp"))
    assert Store(f"sqlite:///{case / 'db.sqlite'}").get_study("faults").state == "finished"


UNREPAIRABLE = {
    "done, kept cut short, parts gone": (
        r"out/kept\.parquet: holds {half} records where the run recorded {kept}, and the part "
        r"files it merges are gone \(out/parts/scores-000000\.parquet\)",
        "done, every part deleted",
    ),
    "merge, half of the parts and no outputs": (
        r"out/scores\.parquet: missing or unreadable where the run recorded 1200, and the "
        r"part files it merges are gone \(out/parts/scores-000000\.parquet\)",
        "before the merge, half of the parts deleted",
    ),
    "scoring, a part of a counted chunk missing": (
        r"out/parts/kept-000003\.parquet: missing, though the state counts its chunk",
        "scoring",
    ),
}


@pytest.mark.parametrize("name", list(UNREPAIRABLE))
def test_what_cannot_be_repaired_is_one_line_and_nothing_is_deleted(cases, tmp_path, name, capsys):
    base, ready = cases
    message, crash_name = UNREPAIRABLE[name]
    case = copy_case(ready, tmp_path)
    crash(case, base, crash_name)
    if name.startswith("done"):
        kept = pq.read_table(base / "out" / "kept.parquet")
        pq.write_table(kept.slice(0, kept.num_rows // 2), case / "out" / "kept.parquet")
    if name.startswith("scoring"):
        set_state(case, phase="score")
        (case / "out" / "parts" / "kept-000003.parquet").unlink()
    before = files(case / "out")
    with contextlib.chdir(case):
        assert main(["curate", "c.toml", "--resume", "--storage", DB]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) <= 3 and "Traceback" not in err, err  # one wrapped line
    flat = " ".join(err.split())
    kept = json.loads((base / "out" / "state.json").read_text())["kept"]
    assert re.search(message.format(half=kept // 2, kept=kept), flat), flat
    assert "run the curation again into a new [output].dir" in flat
    assert files(case / "out") == before, "nothing is deleted or changed"


# -- crafted state files ---------------------------------------------------------------------
CANARY = "pwned.txt"


class Payload:
    """Unpickling this creates CANARY: what a hostile fit.pkl could run."""

    def __reduce__(self):
        return (Path(CANARY).write_text, ("code ran",))


def craft(case: Path, name: str) -> None:
    out = case / "out"
    doc_path = out / "work" / "fit.json"
    doc = json.loads(doc_path.read_text())
    if name == "state.json: not JSON":
        (out / "state.json").write_text("{oops")
    if name == "state.json: wrong types":
        set_state(case, chunks="3")
    if name == "state.json: counts that do not add up":
        set_state(case, kept=10**9)
    if name == "fit.json: not JSON":
        doc_path.write_text("[1, 2")
    if name == "fit.json: an array where a list is":
        doc["scorers"]["dedup"]["component"] = [1, 2, 3]
        doc_path.write_text(json.dumps(doc))
    if name == "fit.json: a scorer left out":
        del doc["scorers"]["metaclip"]
        doc_path.write_text(json.dumps(doc))
    if name == "fit.npz: a pickle":
        (out / "work" / "fit.npz").write_bytes(pickle.dumps(Payload()))
    if name == "fit.pkl of an older autoplat":
        doc_path.unlink()
        (out / "work" / "fit.pkl").write_bytes(pickle.dumps(Payload()))


CRAFTED = {
    "state.json: not JSON": r"out/state\.json: not a curation state \(Invalid JSON",
    "state.json: wrong types": r"out/state\.json: not a curation state \(chunks: Input should",
    "state.json: counts that do not add up": r"more records kept than scored",
    "fit.json: not JSON": r"out/work/fit\.json: not valid JSON",
    "fit.json: an array where a list is": r"fit\.json: scorer 'dedup': 'component' is a list",
    "fit.json: a scorer left out": r"fit\.json: no state of scorer 'metaclip'",
    "fit.npz: a pickle": r"out/work/fit\.npz: not a readable \.npz of plain arrays",
    "fit.pkl of an older autoplat": r"fit\.json: missing \(fit\.pkl is an older format, never",
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_state_file_is_a_clear_error_never_code(cases, tmp_path, name, capsys):
    base, ready = cases
    case = copy_case(ready, tmp_path)
    set_state(case, phase="score", chunks=4, records=600, kept=0, kept_by={})
    for path in part_files(case):
        if int(path.stem.split("-")[1]) >= 4:
            path.unlink()
    craft(case, name)
    before = files(case / "out")
    with contextlib.chdir(case):
        assert main(["curate", "c.toml", "--resume", "--storage", DB]) == 2
    err = capsys.readouterr().err
    flat = " ".join(err.split())
    assert re.search(CRAFTED[name], flat), flat
    assert "changed or damaged outside autoplat" in flat and "Traceback" not in err
    assert not (case / CANARY).exists(), "a state file ran code"
    assert files(case / "out") == before, "nothing is deleted or changed"
    assert Store(f"sqlite:///{case / 'db.sqlite'}").find_study("faults") is None


# -- a real driver killed, interrupted and terminated ---------------------------------------
@pytest.fixture(scope="module")
def gate_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a `platform` subprocess with the holding scorer installed."""
    site = tmp_path_factory.mktemp("gate-site")
    (site / "curate_gate.py").write_text(GATE)
    info = site / "curate_gate-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: curate-gate\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[autoplat]\ncurate_gate = curate_gate\n")
    env = {**os.environ, "PYTHONPATH": str(site), "AUTOPLAT_BUILTIN_ONLY": "0"}
    for key in ("GATE_AT", "GATE_FILE", "GATE_LOG"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def gate_base(tmp_path_factory, gate_env) -> Path:
    """An uninterrupted `platform curate` with the holding scorer (never holding)."""
    base = new_case(tmp_path_factory.mktemp("gate") / "base", gate=True)
    done = subprocess.run(
        [*PLATFORM, "curate", "c.toml", "--storage", DB],
        cwd=base,
        env=gate_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return base


def start_held(case: Path, env: dict[str, str], at: str) -> subprocess.Popen:
    """Start `platform curate` in its own process group; return once it holds at ``at``."""
    held = case / "held"
    env = {**env, "GATE_AT": at, "GATE_FILE": str(held), "GATE_LOG": str(case / "log")}
    process = subprocess.Popen(
        [*PLATFORM, "curate", "c.toml", "--storage", DB],
        cwd=case,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not held.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"platform curate did not reach {at}: {process.communicate()[1]}")
        time.sleep(0.05)
    return process


def resume(case: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**env, "GATE_LOG": str(case / "log")}
    return subprocess.run(
        [*PLATFORM, "curate", "c.toml", "--resume", "--storage", DB],
        cwd=case,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def scored_chunks(case: Path) -> list[int]:
    """The first record id of each chunk scored, in order, over every process."""
    lines = (case / "log").read_text().split("\n")
    return [int(line.split()[1]) for line in lines if line.startswith("score")]


@pytest.mark.parametrize("at", ["fit 450", "score 600"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(gate_env, gate_base, tmp_path, at):
    case = new_case(tmp_path / "case", gate=True)
    process = start_held(case, gate_env, at)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    state = json.loads((case / "out" / "state.json").read_text())
    assert state["phase"] == at.split()[0] and state["chunks"] == (4 if "score" in at else 0)
    done = resume(case, gate_env)
    assert done.returncode == 0, done.stderr
    assert_same_outputs(case, gate_base)
    if "score" in at:  # the chunks written before the kill are not scored again
        assert scored_chunks(case) == [0, 150, 300, 450, 600, 600, 750, 900, 1050]
    study = Store(f"sqlite:///{case / 'db.sqlite'}").get_study("faults")
    assert study.state == "finished"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_with_the_resume_command(gate_env, gate_base, tmp_path, sig, code):
    case = new_case(tmp_path / "case", gate=True)
    process = start_held(case, gate_env, "score 600")
    os.kill(process.pid, sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in err
    assert "interrupted: finished chunks are kept" in err
    assert "platform curate c.toml --resume --storage sqlite:///db.sqlite" in " ".join(err.split())
    store = Store(f"sqlite:///{case / 'db.sqlite'}")
    assert store.get_study("faults").state == "interrupted"
    assert json.loads((case / "out" / "state.json").read_text())["chunks"] == 4
    if sig == signal.SIGTERM:  # (kill -9 above resumes too; one resume here is enough)
        done = resume(case, gate_env)
        assert done.returncode == 0, done.stderr
        assert_same_outputs(case, gate_base)
        assert store.get_study("faults").state == "finished"


def test_a_second_driver_is_refused_and_touches_nothing(gate_env, tmp_path):
    case = new_case(tmp_path / "case", gate=True)
    process = start_held(case, gate_env, "score 600")
    try:
        before = files(case / "out")
        second = resume(case, gate_env)
        assert files(case / "out") == before
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    assert second.returncode == 2, second.stderr
    flat = " ".join(second.stderr.split())
    assert "study 'faults' is being run by another driver" in flat, flat
    assert f"pid {process.pid}" in flat and "Traceback" not in flat


# -- disk full -------------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """``folder`` on a tmpfs of ``size`` (root only); yields a function that resizes it."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("disk full needs root to mount a small tmpfs")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")

    def resize(new: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new}", str(folder)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_is_one_line_exit_1_and_resumes_when_there_is_room(cases, tmp_path, capsys):
    base, _ = cases
    case = new_case(tmp_path / "case")
    with small_disk(case / "out", "400k") as resize, contextlib.chdir(case):
        assert main(["curate", "c.toml", "--storage", DB]) == 1
        err = capsys.readouterr().err
        flat = " ".join(err.split())
        assert "No space left on device" in flat and "continue with --resume" in flat, flat
        assert len(err.strip().splitlines()) <= 4 and "Traceback" not in err
        assert Store(DB).get_study("faults").state == "interrupted"
        resize("64m")
        assert main(["curate", "c.toml", "--resume", "--storage", DB]) == 0
        assert_same_outputs(case, base)
