"""Shared fixtures: one Ray session per test run, tiny configs, builtin plugins only."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

os.environ["AUTOPLAT_BUILTIN_ONLY"] = "1"  # never autoload installed third-party plugins

# Skips CI may see: tests that need a capability of the machine (mounting a small or a
# read-only filesystem, restarting a server as root), not a package or data the project
# installs. Any other skip under CI=true fails the run: a missing peer library, WordNet,
# table or PostgreSQL server must not quietly turn a cross-check off.
EXPECTED_SKIP_REASONS = (
    "cannot mount",
    "needs root",
    "root needs unshare",
    "disk full needs root",
    "a small disk needs a tmpfs mount",
    "restarting the server needs root",
    # nni 3.0 pins filelock<3.12 (torch and Ray need newer): it cannot share the CI venv;
    # benchmarks/strategies_tables.py runs its tuners from a separate venv
    "NNI 3.0 is optional",
    "needs a CUDA GPU",  # @pytest.mark.gpu: one step on CUDA, run where a GPU is lent
)


def unexpected_skips(reports: list) -> list[str]:
    """``node id: reason`` of each skipped test whose reason is not an expected one."""
    found = []
    for report in reports:
        if getattr(report, "wasxfail", None) is not None:
            continue
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report)
        reason = reason.removeprefix("Skipped: ")
        if not any(reason.startswith(expected) for expected in EXPECTED_SKIP_REASONS):
            found.append(f"{report.nodeid}: {reason}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true an unexpected skip fails the run (see EXPECTED_SKIP_REASONS)."""
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = unexpected_skips(reporter.stats.get("skipped", []) if reporter else [])
    if skipped:
        reporter.ensure_newline()
        reporter.write_line(
            f"CI: {len(skipped)} unexpected skips (install what they need, or add the "
            "reason to EXPECTED_SKIP_REASONS in tests/conftest.py if it is the machine's):",
            red=True,
        )
        for line in skipped:
            reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# `make test` runs the suite on two pytest-xdist workers (--dist loadgroup). Every test on
# the PostgreSQL server shares one group, so they run one after another on one worker: one
# of them restarts the server and another ends every session on it.
POSTGRES_FIXTURES = frozenset({"pg_admin", "pg_url"})


def uses_postgres(item: pytest.Item) -> bool:
    """Whether ``item`` talks to AUTOPLAT_TEST_PG's server."""
    callspec = getattr(item, "callspec", None)
    on_server = callspec is not None and callspec.params.get("store_url") == "postgres"
    return on_server or not POSTGRES_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if uses_postgres(item):
            item.add_marker(pytest.mark.xdist_group("postgres"))


# The marker guard: a test that starts Ray or a process must say so with
# @pytest.mark.slow, so that `pytest -m "not slow"` really is the quick run. While an
# unmarked test sets up or runs, an audit hook refuses every new process and Ray's entry
# points refuse to run; the test then fails with the fix, even if it caught the error.
SLOW_HINT = "mark this test @pytest.mark.slow: it {what} (the marker guard in tests/conftest.py)"
# Processes libraries start on their own to probe the machine: ctypes.util.find_library
# (ldconfig, gcc, ...) and joblib's count of physical cores (lscpu, then cat).
PROBES = frozenset(
    {"ldconfig", "ld", "gcc", "cc", "objdump", "uname", "lscpu --parse=core", "cat /proc/cpuinfo"}
)
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.system", "os.spawn"}
)
RAY_ENTRY_POINTS = ("init", "get", "wait", "put")
_GUARDED = pytest.StashKey[pytest.MonkeyPatch]()


class MarkerViolation(RuntimeError):
    """What an unmarked test was refused (a RuntimeError, as a failed spawn may be)."""


# One state per process, shared by every copy of this conftest (tests/test_markers.py runs
# it again inside pytester): the unmarked test running now and what it was refused.
GUARD = sys.__dict__.setdefault("_autoplat_marker_guard", {"test": None, "refused": []})


def _spawned(event: str, args: tuple) -> str | None:
    """What the audit ``event`` starts, in words, or None when it starts no process."""
    if event not in PROCESS_EVENTS:
        return None
    if event != "subprocess.Popen":
        return f"starts a process ({event})"
    executable, argv = args[0], args[1]
    words = [os.fsdecode(argv)] if isinstance(argv, (str, bytes)) else list(map(os.fsdecode, argv))
    name = Path(os.fsdecode(executable) if executable else words[0].split()[0]).name
    if name in PROBES or " ".join([name, *words[1:]]) in PROBES:
        return None
    return f"spawns a subprocess ({name})"


def _refuse(what: str) -> None:
    GUARD["refused"].append(what)
    raise MarkerViolation(SLOW_HINT.format(what=what))


def _audit(event: str, args: tuple) -> None:
    if GUARD["test"] is None:
        return
    what = _spawned(event, args)
    if what is not None:
        _refuse(what)


if not GUARD.get("hooked"):
    sys.addaudithook(_audit)
    GUARD["hooked"] = True


def _refusing_ray(name: str):
    def refused(*args, **kwargs):
        _refuse(f"uses Ray (ray.{name})")

    return refused


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Guard an unmarked test from its fixtures' setup to the end of its call."""
    slow = item.get_closest_marker("slow") is not None
    if not slow and "ray_address" in item.fixturenames:
        pytest.fail(SLOW_HINT.format(what="uses the ray_address fixture"), pytrace=False)
    patch = pytest.MonkeyPatch()  # undone, and the state before restored, by _unguard
    patch.setitem(GUARD, "test", None if slow else item.nodeid)
    patch.setitem(GUARD, "refused", [])
    if not slow and "ray" in sys.modules:  # nor may it use a Ray started earlier on
        for name in RAY_ENTRY_POINTS:
            patch.setattr(sys.modules["ray"], name, _refusing_ray(name))
    item.stash[_GUARDED] = patch
    try:
        return (yield)
    except BaseException:
        _unguard(item)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Fail an unmarked test that started a process or used Ray, even if it went on."""
    try:
        result = yield
    finally:
        refused = _unguard(item)
    if refused:
        pytest.fail(SLOW_HINT.format(what=refused[0]), pytrace=False)
    return result


def _unguard(item: pytest.Item) -> list[str]:
    """Restore the guard as it was before ``item``; returns what ``item`` was refused."""
    refused = list(GUARD["refused"])
    patch = item.stash.get(_GUARDED, None)
    if patch is not None:
        patch.undo()
        del item.stash[_GUARDED]
    return refused


TINY = """
[study]
name = "{name}"
trials = {trials}
seed = 0

[architecture]
name = "vit"

[dataset]
name = "digits"

[space]
depth = [1]
width = [16, 32]
heads = [2]
mlp_ratio = [2]
patch_size = [4]
dropout = 0.0
weight_decay = 0.05
lr = {{ low = 1e-3, high = 5e-3, log = true }}
batch_size = 128
epochs = {epochs}

[strategy]
name = "{strategy}"

[resources]
cpus_per_trial = 1
"""


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config file: the tiny search, with extra TOML appended or a full text."""

    def write(
        text: str | None = None,
        *,
        name: str = "tiny",
        trials: int = 2,
        epochs: int = 2,
        strategy: str = "random",
        extra: str = "",
    ) -> Path:
        body = (
            text
            if text is not None
            else TINY.format(name=name, trials=trials, epochs=epochs, strategy=strategy)
        )
        path = tmp_path / f"{name}.toml"
        path.write_text(textwrap.dedent(body) + textwrap.dedent(extra))
        return path

    return write


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread, and test workers share two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Start one local Ray for the whole run; subprocesses join it with --address."""
    import ray

    from autoplat.core.runner import ensure_ray, shutdown_ray

    ensure_ray(None)
    yield ray.get_runtime_context().gcs_address
    shutdown_ray()


PG_SKIP = (
    "PostgreSQL tests need AUTOPLAT_TEST_PG=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB "
    "(a role with CREATEDB); .ci/run starts a server and sets it"
)


@pytest.fixture(scope="session")
def pg_admin():
    """An AUTOCOMMIT engine on AUTOPLAT_TEST_PG's server (skips when it is unset)."""
    base = os.environ.get("AUTOPLAT_TEST_PG")
    if not base:
        pytest.skip(PG_SKIP)
    from sqlalchemy import create_engine

    engine = create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin):
    """A fresh, empty PostgreSQL database for one test (dropped after it)."""
    name = f"autoplat_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield pg_admin.url.set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """A fresh store URL for one test, on each backend: a new SQLite file, a new PostgreSQL
    database (skipped without AUTOPLAT_TEST_PG)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("pg_url")
