"""The runner every Ray workflow shares (search, its one-shot path, and active learning):
start or join Ray, hold a study's driver lease, run a workflow's trials on Ray Tune with one
retry and failure policy, and turn failed trials into an exit code.

A workflow gives a trainable ``fn(config, job)`` and a Tune callback built on
``trial_callback()`` (which stores its rows); ``run_trials`` does the rest.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from autoplat.core.errors import AutoplatError, ConfigError, StoreError, StoreFault
from autoplat.core.store import Store, Study, StudyState, TrialState

log = logging.getLogger(__name__)

# Ray settings that cut per-trial overhead for short trials (see benchmarks/overhead.py).
RAY_ENV_DEFAULTS = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard files per trial
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    # a trial that raised reports TRIAL_ERROR (without the metric) as its last result
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}
# How a local Ray starts (benchmarks/short_study.py). Ray starts a worker process per CPU
# for the first driver, but a trial is a Tune actor with its own runtime env (env vars),
# which such a worker never serves: each started, imported Ray and sat idle (0.3-0.4
# CPU-s each, at the start, on the study's critical path).
LOCAL_RAY_CONFIG = {"prestart_worker_first_driver": False}
TRIAL_ERROR = "trial_error"  # a result key: the trial raised this error (it is not retried)
# a result key and a failed trial's attr: its error is the user's to fix (exit 2, not 1)
USER_ERROR = "user_error"

Progress = Callable[[str, dict[str, Any]], None]  # on_event(kind, data) of a workflow


@functools.lru_cache(maxsize=4)
def load_splits(dataset: str, options_json: str, seed: int):
    """A dataset's splits, loaded once per process (the driver's checks, then each worker's
    trials) for the same dataset, options (JSON) and seed."""
    from autoplat.core.registry import get_registry

    plugin = get_registry().get("datasets", dataset)
    return plugin.load(plugin.Options.model_validate(json.loads(options_json)), seed)


def reporting_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """The trainable ``fn`` reporting an exception it raises as its last result (under
    TRIAL_ERROR, with ``done``) instead of raising it: Tune then ends the trial without a
    retry, as [resources] max_failures retries only a trial whose worker died. USER_ERROR
    says whether the error is the user's to fix (``is_user_error``). The worker first loads
    the driver's local plugin modules (``[plugins]``, ``--plugin``)."""
    from autoplat.core.registry import get_registry, load_local

    local = list(get_registry().local)

    @functools.wraps(fn)
    def trainable(config: dict[str, Any], job: Any) -> None:
        from ray import tune

        load_local(local)
        try:
            fn(config, job)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which stores it
            log.exception("trial failed")  # the traceback, in the worker's Ray log
            error = f"{type(exc).__name__}: {exc}"
            tune.report({TRIAL_ERROR: error, USER_ERROR: is_user_error(exc), "done": True})

    return trainable


def is_user_error(exc: BaseException) -> bool:
    """Whether a trial's exception is the user's to fix (bad data, labels, config: an
    AutoplatError) rather than a crash or a store fault."""
    return isinstance(exc, AutoplatError) and not isinstance(exc, StoreFault)


def exit_code(failures: Iterable[Mapping[str, Any]]) -> int:
    """The exit code of a run whose trials failed (each failure: a failed trial's stored
    attrs, or its "end" event): 2 when one failed on the user's input, else 1."""
    return 2 if any(failure.get(USER_ERROR) for failure in failures) else 1


def error_text(trial: Any) -> str:
    """A one-paragraph reason a Tune trial failed."""
    try:
        exc = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - fall back to the error file below
        exc = None
    cause = getattr(exc, "cause", exc)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    if trial.error_file and Path(trial.error_file).exists():
        lines = Path(trial.error_file).read_text().strip().splitlines()
        return lines[-1] if lines else "unknown error"
    return "unknown error"


class Retries:
    """The retries of trials whose worker died, stored as trial attrs ``retries`` (a count)
    and ``retry_errors`` (why each attempt ended)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.errors: dict[str, list[str]] = {}  # Tune trial id -> errors

    def record(self, tune_id: str, trial_id: int, trial: Any) -> dict[str, Any]:
        errors = self.errors.setdefault(tune_id, [])
        errors.append(error_text(trial))
        self.store.set_trial_attrs(trial_id, retries=len(errors), retry_errors=errors)
        return {"retries": len(errors), "error": errors[-1].splitlines()[0]}


@functools.cache
def trial_callback() -> type:
    """The base class of a workflow's Tune callback (Ray Tune is imported on first use).

    It stores what every workflow's trials share: a failure (the trial raised: its error
    text and whether it is the user's, ``USER_ERROR``; or its worker died for good) and each
    retry of a trial whose worker died (``Retries``). A subclass stores the rest: it sets
    ``ids[tune trial id]`` (the store's row) when a trial starts, names a trial in events
    with ``who`` and stores a trial that ended without error in ``completed``.
    """
    from ray.tune import Callback

    class TrialCallback(Callback):
        def __init__(self, store: Store, on_event: Progress) -> None:
            self.store = store
            self.on_event = on_event
            self.ids: dict[str, int] = {}
            self.retries = Retries(store)

        def __reduce__(self):
            # Ray pickles callbacks into its experiment snapshot; the store is not picklable
            # and the driver is the only writer, so a restored copy writes nothing.
            return (Callback, ())

        def who(self, trial: Any) -> dict[str, Any]:
            """The fields that name ``trial`` in this workflow's events."""
            raise NotImplementedError

        def completed(self, trial: Any, last: dict[str, Any]) -> None:
            """Store a trial that ended without error (``last``: its last result)."""
            raise NotImplementedError

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if TRIAL_ERROR in last:
                self.failed(trial, last[TRIAL_ERROR], bool(last.get(USER_ERROR)))
            else:
                self.completed(trial, last)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.failed(trial, error_text(trial), user=False)

        def on_trial_recover(self, iteration, trials, trial, **info):
            retries = self.retries.record(trial.trial_id, self.ids[trial.trial_id], trial)
            self.on_event("retry", {**self.who(trial), **retries})

        def failed(self, trial: Any, error: str, user: bool) -> None:
            trial_id = self.ids[trial.trial_id]
            if user:
                self.store.set_trial_attrs(trial_id, **{USER_ERROR: True})
            self.store.finish_trial(trial_id, TrialState.FAIL, error=error)
            end = {"state": "fail", "error": error, USER_ERROR: user}
            self.on_event("end", {**self.who(trial), **end})

    return TrialCallback


def default_concurrency(cpus: float, gpus: float) -> int:
    """How many trials of ``cpus`` and ``gpus`` each the Ray cluster holds at once."""
    import ray

    total = ray.cluster_resources()
    fits = int(total.get("CPU", 1) // cpus)
    if gpus:
        fits = min(fits, int(total.get("GPU", 0) // gpus))
    return max(1, fits)


def find_study(store: Store, name: str, resume: bool) -> Study | None:
    """The study ``name`` that ``--resume`` continues (None: a new one); StoreError for a
    ``--resume`` without it, or a new study whose name is taken."""
    existing = store.find_study(name)
    if existing is None and resume:
        raise StoreError(
            f"--resume: no study named '{name}' in {store.display_url}; run without --resume"
        )
    if existing is not None and not resume:
        raise StoreError(
            f"study '{name}' already exists in {store.display_url}; pass --resume to "
            "continue it, or change [study].name"
        )
    return existing


def start_ray(address: str | None, path: Path | str, resources: Any) -> None:
    """Start or join Ray (``ensure_ray``) and check that a node can hold one trial of
    ``resources`` (a config's [resources]; ``check_resources``)."""
    ensure_ray(address)
    check_resources(path, resources.cpus_per_trial, resources.gpus_per_trial)


def reopen(store: Store, study_id: int, target_trials: int | None = None) -> None:
    """Continue a resumed study (its lease held): the trials its dead or stopped driver left
    running become interrupted, and the study runs again (with a changed
    ``target_trials``, if given)."""
    store.interrupt_running(study_id)
    store.set_study_state(study_id, StudyState.RUNNING, target_trials=target_trials)


@contextlib.contextmanager
def driving(
    store: Store, existing: Study | None, start: Callable[[], None], create: Callable[[], int]
) -> Iterator[int]:
    """Be the one driver of a study for a block (yields its id). A resumed study's lease is
    taken first (a live driver's study stays as it is: StoreError naming it), then
    ``start`` runs (Ray, checks that write nothing); a new study is stored by ``create``
    after ``start``, then leased. A block that fails or is interrupted leaves the study
    interrupted where the store allows it, for ``--resume``."""
    with contextlib.ExitStack() as stack:
        if existing is not None:
            stack.enter_context(store.lease(existing.id))
        start()
        study_id = existing.id if existing is not None else create()
        if existing is None:
            stack.enter_context(store.lease(study_id))
        try:
            yield study_id
        except BaseException:
            with contextlib.suppress(Exception):  # the store may be what failed
                store.interrupt_running(study_id)
                store.set_study_state(study_id, StudyState.INTERRUPTED)
                study_end_hook(store, study_id)
            raise


def study_end_hook(store: Store, study_id: int) -> None:
    """Tell the plugins a study ended (``on_study_end``); one that raises is reported by
    its name and the others still run (``Registry.notify``)."""
    from autoplat.core.registry import get_registry

    study = next(s for s in store.studies() if s.id == study_id)
    get_registry().notify("on_study_end", study=study.name, best=store.summary(study)["best"])


def ray_workdir(study: Any, store_url: str) -> Path:
    """Where Ray Tune's per-run folders go: ``[study] workdir``, else ``ray/`` beside the
    store."""
    workdir = study.workdir
    return (Path(workdir).expanduser() if workdir else beside_store(store_url, "ray")).resolve()


def beside_store(store_url: str, name: str) -> Path:
    """The folder ``name`` next to a SQLite store's file, else ``runs/<name>``."""
    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).expanduser().parent / name
    return Path("runs") / name


@contextlib.contextmanager
def ray_folder(study: Any, store_url: str) -> Iterator[Path]:
    """Ray Tune's folder for one run of a study: ``<workdir>/<name>-<time>``, where workdir
    is ``[study] workdir``, else ``ray/`` next to a SQLite store, else ``runs/ray``. It and
    the folders made for it are removed afterwards, unless ``[study] keep_ray_files``."""
    base = ray_workdir(study, store_url)
    made = [p for p in (base, *base.parents) if not p.exists()]  # deepest first
    folder = base / f"{study.name}-{int(time.time())}"
    try:
        yield folder
    finally:
        if not study.keep_ray_files:
            shutil.rmtree(folder, ignore_errors=True)
            for path in made:
                with contextlib.suppress(OSError):  # a folder someone else wrote to stays
                    path.rmdir()


def run_config(folder: Path, callback: Any, max_failures: int = 0) -> Any:
    """Tune's RunConfig for a run in ``folder``: our callback stores everything; a trial
    whose worker died is retried ``max_failures`` times."""
    from ray import tune

    return tune.RunConfig(
        name=folder.name,
        storage_path=str(folder.parent),
        callbacks=[callback],
        failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
        verbose=0,
        log_to_file=False,
    )


def fit(tuner: Any, store: Store, study_id: int, ends_study: bool = True) -> None:
    """Run the trials; mark trials left running and the study interrupted after Ctrl-C.

    With ``ends_study`` the study is then finished (or interrupted) and ``on_study_end``
    runs; without, only an interruption is recorded. A store that failed under Tune
    surfaces as its StoreFault (``driving`` then marks what it can).
    """
    before = signal.getsignal(signal.SIGINT)
    try:
        tuner.fit()
    except Exception as exc:
        fault = _store_fault(exc)
        if fault is not None and fault is not exc:
            raise fault from None
        raise
    # Tune installs its own SIGINT handler for the run and, when a Ctrl-C (or our SIGTERM)
    # stops it, puts the previous one back: a stop between two trials leaves none running
    stopped = _tune_catches_sigint() and signal.getsignal(signal.SIGINT) is before
    interrupted = store.interrupt_running(study_id) > 0 or stopped
    if ends_study or interrupted:
        store.set_study_state(
            study_id, StudyState.INTERRUPTED if interrupted else StudyState.FINISHED
        )
        study_end_hook(store, study_id)


def _tune_catches_sigint() -> bool:
    """Whether Tune installs its SIGINT handler for a run here (see ``fit``)."""
    main = threading.current_thread() is threading.main_thread()
    return main and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))


def run_trials(
    fn: Callable[..., None],
    job: Any,
    *,
    store: Store,
    study_id: int,
    study: Any,
    resources: Any,
    callback: Any,
    concurrency: int | None = None,
    ends_study: bool = True,
    **tune_config: Any,
) -> None:
    """Run trials of the trainable ``fn(config, job)`` on Ray Tune and store them.

    Each trial's error is reported (``reporting_errors``) and a dead worker's trial retried
    ``[resources] max_failures`` times; each takes ``resources`` per trial, and at most
    ``[resources] max_concurrent`` run at once (default: ``concurrency``, else as many as
    the cluster holds). Tune writes in a ``ray_folder`` of ``study`` (a config's [study]),
    ``callback`` stores the trials and ``fit`` records the end (see ``ends_study``).
    ``tune_config``: ``param_space`` for the Tuner, the rest (``search_alg``,
    ``scheduler``, ``num_samples``) for its TuneConfig.
    """
    from ray import tune

    cpus, gpus = resources.cpus_per_trial, resources.gpus_per_trial
    concurrency = resources.max_concurrent or concurrency or default_concurrency(cpus, gpus)
    param_space = tune_config.pop("param_space", None)
    fn = tune.with_parameters(reporting_errors(fn), job=job)
    fn = tune.with_resources(fn, {"cpu": cpus, "gpu": gpus})
    with ray_folder(study, store.url) as folder:
        tuner = tune.Tuner(
            fn,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrency, reuse_actors=True, **tune_config
            ),
            run_config=run_config(folder, callback, resources.max_failures),
        )
        fit(tuner, store, study_id, ends_study=ends_study)


def _store_fault(exc: BaseException | None) -> StoreFault | None:
    """The StoreFault behind an exception Tune raised (a callback's write failed)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StoreFault):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def ensure_ray(address: str | None) -> None:
    """Start local Ray (``LOCAL_RAY_CONFIG``), or join the cluster at ``address`` (or
    RAY_ADDRESS)."""
    import ray

    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Trial results live in our store; Ray's result files are off (see RAY_ENV_DEFAULTS).
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # On Ctrl-C Tune suggests Tuner.restore (ours is `platform search --resume`), and it logs
    # each failed trial's traceback and their list: the CLI prints one line per failed
    # trial, and the store keeps each error.
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    # A notice printed on every start of a local cluster; not actionable for users.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    if ray.is_initialized():
        return
    # "local" starts a fresh local Ray; without it ray.init would join whatever cluster
    # `ray start` last left behind on this machine.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(address)
    options = {}  # a running cluster has its own; ray.init adds to the dict it gets
    if address == "local":
        options["_system_config"] = dict(LOCAL_RAY_CONFIG)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with _sigterm_blocked(address == "local"):
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=True,
                **options,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise AutoplatError(
            f"cannot reach the Ray cluster at '{address}': {exc}. Start it with "
            "`ray start --head` there, or drop --address to run locally"
        ) from None
    if callable(sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)  # ray.init replaced it with sys.exit
    node = getattr(ray._private.worker, "_global_node", None)
    if address == "local" and node is not None:
        _LOCAL_SESSION[0] = Path(node.get_session_dir_path())


_LOCAL_SESSION: list[Path | None] = [None]  # the temp folder of the local Ray we started


@contextlib.contextmanager
def _sigterm_blocked(block: bool) -> Iterator[None]:
    """Start a local Ray's processes with SIGTERM blocked: a SIGTERM to the driver's whole
    process group (systemd, Slurm) then stops the study as Ctrl-C does, instead of killing
    Ray under it (they still end with the driver: Ray ties them to its life)."""
    if not block or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def shutdown_ray(keep_files: bool = False) -> None:
    """Stop Ray; a local Ray this process started also loses its temp session folder
    (``/tmp/ray/session_*``, its logs) unless ``keep_files``. Other sessions stay."""
    import ray

    session, _LOCAL_SESSION[0] = _LOCAL_SESSION[0], None
    node = getattr(ray._private.worker, "_global_node", None)
    if session is not None and node is not None:
        # its processes block SIGTERM (see _sigterm_blocked): skip the 1 s wait per process
        # for a graceful exit they cannot make; they get SIGKILL, as after that wait
        kill = node.kill_all_processes
        node.kill_all_processes = lambda **kw: kill(**{**kw, "allow_graceful": False})
    ray.shutdown()
    if session is None or keep_files:
        return
    shutil.rmtree(session, ignore_errors=True)
    latest = session.parent / "session_latest"
    if latest.is_symlink() and Path(os.readlink(latest)) in (session, Path(session.name)):
        latest.unlink(missing_ok=True)


def check_resources(path: Path | str, cpus: float, gpus: float) -> None:
    """Refuse a trial no Ray node can hold (it would wait forever), before anything is
    stored: ``cpus`` and ``gpus`` per trial against each live node of the cluster."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if gpus > most_gpus:
        has = "no GPU" if not most_gpus else f"at most {most_gpus:g} GPUs on one node"
        raise ConfigError(
            f"{path}: resources.gpus_per_trial = {gpus:g} but the Ray cluster has {has}; set "
            f"gpus_per_trial = {most_gpus:g} or join a cluster with more GPUs (--address)"
        )
    if cpus > most_cpus:
        raise ConfigError(
            f"{path}: resources.cpus_per_trial = {cpus:g} but the Ray cluster has at most "
            f"{most_cpus:g} CPUs on one node; set cpus_per_trial = {most_cpus:g} or less, or "
            "join a bigger cluster (--address)"
        )
    raise ConfigError(
        f"{path}: resources: no Ray node has {cpus:g} CPUs and {gpus:g} GPUs at once; lower "
        "cpus_per_trial or gpus_per_trial, or join a bigger cluster (--address)"
    )


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if address in ("local", "auto") or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise AutoplatError(
            f"cannot reach the Ray cluster at '{address}' ({exc.strerror or exc}). Start it "
            "with `ray start --head --port=PORT` there, or drop --address to run locally"
        ) from None
