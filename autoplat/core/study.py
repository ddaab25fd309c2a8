"""The search driver: a Strategy as a Ray Tune Searcher, the trainables of a search's
trials, and a callback that writes every trial event to the store (the driver is the only
writer). Ray itself is run by autoplat.core.runner, which active learning shares."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoplat.core.baseline import fit_baseline
from autoplat.core.config import Resolved, unbuildable
from autoplat.core.database import BASELINE_KEY, OBJECTIVES_KEY
from autoplat.core.errors import ConfigError, StoreError
from autoplat.core.interfaces import OneShotStrategy, Splits, Strategy
from autoplat.core.runner import (
    TRIAL_ERROR,
    Progress,
    beside_store,
    driving,
    find_study,
    load_splits,
    ray_workdir,
    reopen,
    run_trials,
    start_ray,
    study_end_hook,
    trial_callback,
)
from autoplat.core.space import DATASET_PREFIX, SearchSpace, params_key, split_dataset_params
from autoplat.core.store import Store, Study, StudyState, Trial, TrialState

log = logging.getLogger(__name__)

NUMERIC = (int, float)
SHIP_SPLITS_BYTES = 64 * 2**20  # the driver's splits go to the workers up to this size


@dataclass(frozen=True)
class Job:
    """What a worker needs to train one trial: plugin names, options and the study seed."""

    architecture: str
    dataset: str
    dataset_options: str  # JSON
    seed: int
    threads: int
    checkpoint_dir: str | None = None  # absolute; None: save no weights
    # the splits the driver loaded (``check_data``), for trials that load the data with
    # the study's own options: a worker then needs no dataset code and no files
    splits: Splits | None = field(default=None, compare=False, repr=False)

    def load(self, data_options: dict[str, Any]) -> Splits:
        """The splits of a trial whose space sets ``data_options`` (dataset params):
        the driver's, or loaded once per worker process (``load_splits``)."""
        if self.splits is not None and not data_options:
            return self.splits
        options = json.loads(self.dataset_options) | data_options
        return load_splits(self.dataset, json.dumps(options, sort_keys=True), self.seed)


@dataclass(frozen=True)
class BenchmarkJob:
    """What a worker needs to look one trial up in a tabular benchmark."""

    benchmark: str
    options: str  # JSON
    seed: int


def trial_seed(study_seed: int, params: dict[str, Any]) -> int:
    """A per-trial seed: the same study seed and params give the same seed."""
    return (study_seed * 1_000_003 + zlib.crc32(json.dumps(params, sort_keys=True).encode())) % (
        2**31
    )


def load_data(resolved: Resolved) -> Splits | None:
    """A model study's splits with its own dataset options (None: a benchmark study)."""
    if resolved.dataset is None or resolved.dataset_options is None:
        return None
    return resolved.dataset.load(resolved.dataset_options, resolved.config.study.seed)


def check_data(resolved: Resolved, splits: Splits | None = None) -> Splits | None:
    """Load a model study's data once in the driver (or take its ``splits``, loaded by
    ``load_data``), so a DataError (a missing file, a bad row) or a space none of whose
    params fit the data (a patch size that does not divide the images) stops the search
    before Ray starts or anything is stored. Returns the splits when they are small
    enough to ship to the workers (``SHIP_SPLITS_BYTES``) and every trial uses them (no
    dataset params in the space)."""
    if resolved.dataset is None or resolved.dataset_options is None:
        return None
    assert resolved.architecture is not None
    splits = splits or load_data(resolved)
    assert splits is not None
    if any(name.startswith(DATASET_PREFIX) for name in resolved.space.dims):
        return None  # trials load the data with other options: their spec may differ
    reason = unbuildable(resolved.space, resolved.architecture, splits.spec)
    if reason is not None:
        raise ConfigError(
            f"{resolved.path}: space: none of 200 sampled params of architecture "
            f"'{resolved.architecture.name}' fit the data of dataset '{resolved.dataset.name}' "
            f"(e.g. {reason}); change the [space] values or the [dataset] options"
        )
    tensors = [t for part in (splits.train, splits.val, splits.test) for t in part]
    size = sum(t.numel() * t.element_size() for t in tensors if hasattr(t, "element_size"))
    return splits if size <= SHIP_SPLITS_BYTES else None


def run_trial(config: dict[str, Any], job: Job) -> None:
    """The Ray Tune trainable: load data, build the model, train, report every epoch.

    With ``job.checkpoint_dir`` the last report first saves the final weights (those the
    trial's value and test metrics measure) to ``<checkpoint_dir>/<ray trial id>.pt`` and
    reports that path as ``checkpoint``; the driver records it in the store.
    """
    import ray
    import torch
    from ray import tune

    from autoplat.core.registry import get_registry
    from autoplat.core.training import save_checkpoint

    torch.set_num_threads(job.threads)
    params = dict(config)
    data_options, model_params = split_dataset_params(params)
    splits = job.load(data_options)
    arch = get_registry().get("architectures", job.architecture)
    arch_params, hyper = arch.split_params(model_params)
    seed = trial_seed(job.seed, params)
    torch.manual_seed(seed)
    model = arch.build(arch_params, splits.spec)
    node = ray.get_runtime_context().get_node_id()
    size = sum(p.numel() for p in model.parameters())

    def report(step: int, metrics: dict[str, float]) -> None:
        extra: dict[str, Any] = {"model_params": size}
        if step >= hyper["epochs"]:
            extra["finished"] = 1
            if job.checkpoint_dir:
                path = Path(job.checkpoint_dir) / f"{tune.get_context().get_trial_id()}.pt"
                save_checkpoint(model, path)
                extra["checkpoint"] = str(path)
        tune.report({**metrics, **extra, "epoch": step, "node": node})

    arch.train(model, splits, hyper, report, seed)


def run_benchmark_trial(config: dict[str, Any], job: BenchmarkJob) -> None:
    """The Ray Tune trainable of a benchmark study: one lookup, reported as the final epoch."""
    import ray
    from ray import tune

    from autoplat.core.registry import get_registry

    benchmark = get_registry().get("benchmarks", job.benchmark)
    options = benchmark.Options.model_validate_json(job.options)
    params = dict(config)
    metrics = benchmark.evaluate(params, options, trial_seed(job.seed, params))
    node = ray.get_runtime_context().get_node_id()
    tune.report({**metrics, "finished": 1, "epoch": 1, "node": node})


ARTIFACT_PREFIX = "artifact_"  # a report's str value under artifact_<kind>: a file to record
SUPERNET_PREFIX = "supernet_"  # a one-shot trial's metrics: stored, never the study's value


@dataclass(frozen=True)
class OneShotJob:
    """What a worker needs to train a one-shot strategy's supernet."""

    data: Job  # the dataset, its options, the seed and the threads
    strategy: str
    options: str  # JSON
    space: SearchSpace
    direction: str


def run_one_shot_trial(config: dict[str, Any], job: OneShotJob) -> None:
    """The Ray Tune trainable that trains a supernet and reports the derived architectures.

    Every supernet epoch is reported with its metrics prefixed ``supernet_`` (so the
    supernet is never ranked against real trials); the last report adds ``derived``.
    """
    import torch
    from ray import tune

    from autoplat.core.registry import get_registry

    torch.set_num_threads(job.data.threads)
    splits = job.data.load({})
    registry = get_registry()
    cls = registry.get("strategies", job.strategy)
    options = cls.Options.model_validate_json(job.options)
    architecture = registry.get("architectures", job.data.architecture)  # builds the supernet
    strategy = cls(job.space, job.direction, job.data.seed, options, architecture=architecture)
    held: list[dict[str, Any]] = []  # the last epoch's report waits for the derived cells

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if held:
            tune.report(held.pop())
        held.append({f"{SUPERNET_PREFIX}{k}": v for k, v in metrics.items()} | {"epoch": epoch})

    derived = strategy.search(splits, report)
    last = held.pop() if held else {"epoch": 0}
    tune.report({**last, "derived": json.dumps(derived), "finished": 1})


class FixedParams(Strategy):
    """Proposes a given list of params in order, then stops (a one-shot study's 2nd phase)."""

    name = "fixed"

    def __init__(self, space: SearchSpace, params: list[dict[str, Any]], done: set) -> None:
        super().__init__(space)
        self.todo = [p for p in params if params_key(p) not in done]

    def ask(self) -> dict[str, Any] | None:
        return self.todo.pop(0) if self.todo else None

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Nothing to learn."""


def _searcher_class():
    from ray.tune.search import Searcher

    class StrategySearcher(Searcher):
        """Any ask/tell Strategy as a Ray Tune Searcher.

        Each intermediate value reaches ``Strategy.report``. A trial that reached its last
        epoch (its result has ``finished``) is told its value, one that raised is told
        None, and one a scheduler stopped early goes to ``Strategy.prune``. It limits
        concurrency itself (Tune hands it ``max_concurrent_trials``), counting running
        trials but not paused ones, so HyperBand can fill a bracket while trials wait.
        """

        def __init__(
            self,
            strategy: Strategy,
            objectives: list[str],
            known: dict[str, list[float] | None] | None = None,
        ) -> None:
            mode = "max" if strategy.direction == "maximize" else "min"
            super().__init__(metric=objectives[0], mode=mode)
            self.objectives = objectives
            self.strategy = strategy
            self.known = dict(known or {})  # params key -> values of completed trials
            self.live: dict[str, dict[str, Any]] = {}
            self.last: dict[str, dict] = {}  # the last result of each live trial
            self.paused: set[str] = set()
            self.max_concurrent = 0  # 0: no limit

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: a study resumes from the store (`--resume`)."""

        def restore(self, checkpoint_path: str) -> None:
            """Nothing to restore: see ``save``."""

        def __getstate__(self) -> dict[str, Any]:
            # Ray snapshots its experiment state; we resume from the store instead, so the
            # strategy (which may hold locks, e.g. an Optuna study) is left out.
            return {**self.__dict__, "strategy": None, "live": {}, "last": {}, "paused": set()}

        def set_max_concurrency(self, max_concurrent: int) -> bool:
            self.max_concurrent = max_concurrent
            return True

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            running = len(self.live) - len(self.paused)
            if self.max_concurrent and running >= self.max_concurrent:
                return None
            params = self.strategy.ask()
            while params is not None and params_key(params) in self.known:
                # a resumed strategy proposes a trial the store holds (its replay met the
                # trials in another order than it asked them): it gets the stored result
                self.strategy.tell_values(params, self.known.pop(params_key(params)))
                params = self.strategy.ask()
            if params is None:
                return Searcher.FINISHED
            self.live[trial_id] = params
            return dict(params)

        def on_pause(self, trial_id: str) -> None:
            """A HyperBand scheduler paused the trial at a budget (``HyperBandForBOHB``,
            ``PausingHyperBand``)."""
            self.paused.add(trial_id)

        def on_unpause(self, trial_id: str) -> None:
            """The paused trial goes on to the next budget."""
            self.paused.discard(trial_id)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            params = self.live.get(trial_id)
            if params is not None:
                self.last[trial_id] = result
                self._report(params, result)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            # Tune skips on_trial_result for a result it stops the trial on (the last
            # epoch, or a scheduler's STOP), so that result is reported here; a trial
            # stopped while paused (HyperBand) comes without one: its last result counts.
            params = self.live.pop(trial_id, None)
            last = self.last.pop(trial_id, None)
            self.paused.discard(trial_id)
            if params is None:
                return
            if error or (result or {}).get(TRIAL_ERROR):
                self.strategy.tell(params, None)
                return
            result = result or last
            if result is not None:
                self._report(params, result)
            if result is not None and result.get("finished"):
                values = [result.get(metric) for metric in self.objectives]
                numeric = all(isinstance(v, NUMERIC) and not isinstance(v, bool) for v in values)
                self.strategy.tell_values(params, [float(v) for v in values] if numeric else None)
            else:
                self.strategy.prune(params)

        def _report(self, params: dict[str, Any], result: dict) -> None:
            value = result.get(self.metric)
            if isinstance(value, NUMERIC) and not isinstance(value, bool):
                step = int(result.get("epoch", result.get("training_iteration", 0)))
                self.strategy.report(params, step, float(value))

    return StrategySearcher


def strategy_searcher(
    strategy: Strategy,
    objectives: list[str],
    known: dict[str, list[float] | None] | None = None,
):
    """Wrap a Strategy as a ``ray.tune.search.Searcher`` (the first objective: its metric);
    ``known``: the completed trials of a resumed study, never run again."""
    return _searcher_class()(strategy, objectives, known)


def _hyperband_class() -> type:
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import HyperBandScheduler, TrialScheduler

    class PausingHyperBand(HyperBandScheduler):
        """Ray's HyperBand telling the searcher which trials it pauses and resumes (as
        Ray's HyperBandForBOHB does), so a paused trial does not count against the
        concurrency limit: a bracket fills, and its trials are halved at each rung.
        Without it the limit kept a bracket's other trials from starting, and the paused
        ones were resumed to the end, so HyperBand stopped nothing."""

        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            if action == TrialScheduler.PAUSE:
                tune_controller.search_alg.searcher.on_pause(trial.trial_id)
            return action

        def _unpause_trial(self, tune_controller, trial):
            tune_controller.search_alg.searcher.on_unpause(trial.trial_id)

        def choose_trial_to_run(self, tune_controller):
            """Ray's choice; when nothing runs and nothing is ready, halve the brackets
            that hold paused trials now (as HyperBandForBOHB does): the searcher has no
            more trials to fill them, and their paused trials would wait for ever."""
            chosen = super().choose_trial_to_run(tune_controller)
            trials = tune_controller.get_trials()
            if chosen is not None or any(t.status == Trial.RUNNING for t in trials):
                return chosen
            for band in self._hyperbands:
                for bracket in band:
                    paused = bracket and any(
                        t.status == Trial.PAUSED for t in bracket.current_trials()
                    )
                    if paused:
                        self._process_bracket(tune_controller, bracket)
            return super().choose_trial_to_run(tune_controller)

    return PausingHyperBand


def make_scheduler(resolved: Resolved):
    """The Ray Tune trial scheduler chosen in ``[scheduler]``."""
    from ray.tune import schedulers

    cfg = resolved.config.scheduler
    metric = resolved.config.study.metric
    mode = "max" if resolved.direction == "maximize" else "min"
    max_t = int(resolved.space.dims["epochs"].value) if "epochs" in resolved.space.fixed() else 100
    common = {"metric": metric, "mode": mode, "time_attr": "training_iteration"}
    if cfg.name == "asha":
        return schedulers.ASHAScheduler(
            max_t=max_t,
            grace_period=cfg.grace_period,
            reduction_factor=cfg.reduction_factor,
            **common,
        )
    if cfg.name == "hyperband":
        return _hyperband_class()(max_t=max_t, reduction_factor=cfg.reduction_factor, **common)
    if cfg.name == "hyperband_bohb":  # pauses trials at budgets: see StrategySearcher.on_pause
        return schedulers.HyperBandForBOHB(
            max_t=max_t, reduction_factor=cfg.reduction_factor, **common
        )
    if cfg.name == "median":
        return schedulers.MedianStoppingRule(
            grace_period=cfg.grace_period,
            min_samples_required=cfg.min_samples_required,
            **common,
        )
    return schedulers.FIFOScheduler()


CHECKPOINT = "checkpoint"  # the Artifact kind of a trial's weights


def checkpoint_dir(resolved: Resolved, store_url: str) -> Path | None:
    """Where a study's trials save their weights (None when ``checkpoints = "none"``).

    ``[study].checkpoint_dir``, else ``checkpoints/`` next to a SQLite store, else
    ``runs/checkpoints``; then a folder per study. Workers write there and the driver reads
    and deletes there, so on a multi-node cluster it must be storage every node shares.
    """
    cfg = resolved.config.study
    if cfg.checkpoints == "none":
        return None
    base = Path(cfg.checkpoint_dir).expanduser() if cfg.checkpoint_dir else None
    return ((base or beside_store(store_url, "checkpoints")) / cfg.name).resolve()


_NOT_OURS: set[str] = set()  # checkpoint paths outside the study's folder, warned about once


def record_checkpoint(
    store: Store,
    study: Study,
    trial_id: int,
    path: str,
    retention: str,
    folder: Path | None = None,
) -> None:
    """Record a finished trial's checkpoint; with retention "best" keep only the best's.

    Only files inside ``folder`` (the study's checkpoint folder; default: that of ``path``)
    are ever deleted: a listed file elsewhere is left, with its row, and a warning.
    """
    if not Path(path).exists():
        log.warning(
            "checkpoint %s is not visible to the driver: put [study].checkpoint_dir on "
            "storage every node shares",
            path,
        )
        return
    store.add_artifact(study.id, trial_id, CHECKPOINT, path)
    if retention != "best":
        return
    folder = (folder or Path(path).parent).resolve()
    best = store.best_trial(study)
    for artifact in store.artifacts(study.id, kind=CHECKPOINT):
        if best is not None and artifact.trial_id == best.id:
            continue
        if not Path(artifact.path).resolve().is_relative_to(folder):
            if artifact.path not in _NOT_OURS:
                _NOT_OURS.add(artifact.path)
                log.warning(
                    "not deleting checkpoint %s of study '%s': it is outside the study's folder %s",
                    artifact.path,
                    study.name,
                    folder,
                )
            continue
        Path(artifact.path).unlink(missing_ok=True)
        store.delete_artifact(artifact.id)


def _store_callback(store: Store, study_id: int, resolved: Resolved, on_event: Progress):
    from autoplat.core.registry import get_registry

    metric = resolved.config.study.metric
    name = resolved.config.study.name
    retention = resolved.config.study.checkpoints
    folder = checkpoint_dir(resolved, store.url)
    ray_base = ray_workdir(resolved.config.study, store.url)
    artifacts = beside_store(store.url, "artifacts").resolve() / name
    notify = get_registry().notify  # each plugin's on_trial_result on its own

    class StoreCallback(trial_callback()):
        """Writes trial start, each report, completion and errors to the store."""

        def __init__(self) -> None:
            super().__init__(store, on_event)
            self.numbers: dict[str, int] = {}
            self.placed: set[str] = set()  # Tune trial ids whose node is stored

        def who(self, trial) -> dict[str, Any]:
            return {"number": self.numbers[trial.trial_id]}

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.trial_id in self.ids:  # a paused trial (HyperBand) goes on: same row
                return
            row = store.start_trial(study_id, dict(trial.config), ray_trial_id=trial.trial_id)
            self.ids[trial.trial_id], self.numbers[trial.trial_id] = row.id, row.number
            on_event("start", {"number": row.number, "params": dict(trial.config)})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if TRIAL_ERROR in result:  # stored as the trial's error when it completes
                # the scheduler sees this result at the trial's end: give it the last
                # report's metrics (NaN for none), as it keeps a trial that raised
                result.update({k: v for k, v in trial.last_result.items() if k not in result})
                result.setdefault(metric, float("nan"))
                return
            trial_id = self.ids[trial.trial_id]
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            values = {
                k: float(v)
                for k, v in result.items()
                if isinstance(v, NUMERIC)
                and not isinstance(v, bool)
                and (k in _REPORTED or k.startswith(_REPORTED_PREFIXES))
            }
            store.add_metrics(trial_id, step, values)
            node = result.get("node")
            if node and trial.trial_id not in self.placed:
                store.set_trial_node(trial_id, node)
                self.placed.add(trial.trial_id)
            number = self.numbers[trial.trial_id]
            notify("on_trial_result", study=name, trial=number, step=step, metrics=values)
            on_event("result", {"number": number, "step": step, "metrics": values})

        def completed(self, trial, last: dict[str, Any]) -> None:
            finished = bool(last.get("finished"))
            value = last.get(metric)
            state = TrialState.COMPLETE if finished else TrialState.PRUNED
            store.finish_trial(self.ids[trial.trial_id], state, value=value)
            if finished and last.get("derived"):
                store.set_trial_attrs(self.ids[trial.trial_id], derived=json.loads(last["derived"]))
            if finished:  # files a trainer reports as artifact_<kind> = path (e.g. samples)
                for key, path in last.items():
                    if key.startswith(ARTIFACT_PREFIX) and isinstance(path, str):
                        kind = key.removeprefix(ARTIFACT_PREFIX)
                        number = self.numbers[trial.trial_id]
                        kept = keep_artifact(path, ray_base, artifacts / f"trial-{number}")
                        store.add_artifact(study_id, self.ids[trial.trial_id], kind, kept)
            if finished and last.get("checkpoint"):
                record_checkpoint(
                    store,
                    store.get_study(name),
                    self.ids[trial.trial_id],
                    last["checkpoint"],
                    retention,
                    folder,
                )
            on_event(
                "end",
                {"number": self.numbers[trial.trial_id], "state": state.value, "value": value},
            )

    return StoreCallback()


# What a trial's reports store: the trainers' own metrics (train_/val_/test_ names, so an
# architecture's extra metrics such as val_recall_at_1 are kept), not Ray's bookkeeping.
_REPORTED = {
    "metric",
    "model_params",
    "simulated_seconds",  # what a benchmark study's trial would have cost to train
}
_REPORTED_PREFIXES = ("train_", "val_", "test_", SUPERNET_PREFIX)


def check_study(store: Store, resolved: Resolved, resume: bool) -> Study | None:
    """Refuse a name clash or a bad ``--resume`` before anything is written or started."""
    cfg = resolved.config.study
    existing = find_study(store, cfg.name, resume)
    if existing is not None and _without_trials(json.loads(existing.config)) != _without_trials(
        resolved.raw
    ):
        raise StoreError(
            f"--resume: the config of '{cfg.name}' changed since it started (only "
            "[study].trials may change); use a new [study].name for a new search"
        )
    return existing


def prepare(resolved: Resolved, new: bool) -> tuple[Splits | None, dict | None]:
    """A study's checked data (``check_data``: the splits to ship, or None) and, for a
    ``new`` study with a ``[baseline]``, the baseline fitted on the study's split."""
    loaded = load_data(resolved)
    splits = check_data(resolved, loaded)
    section = resolved.config.baseline
    if not new or section is None:
        return splits, None
    return splits, fit_baseline(section, loaded, resolved.config.study.seed, resolved.path)


def create_study(store: Store, resolved: Resolved, baseline: dict[str, Any] | None = None) -> int:
    """Store a new search study (with its fitted ``[baseline]``); returns its id."""
    cfg = resolved.config.study
    stored = dict(resolved.raw)
    if cfg.objectives:  # with their directions, for show's Pareto front
        stored[OBJECTIVES_KEY] = resolved.objectives
    if baseline is not None:
        stored[BASELINE_KEY] = baseline
    return store.create_study(
        cfg.name,
        kind="search",
        direction=resolved.direction,
        metric=cfg.metric,
        target_trials=cfg.trials,
        config=json.dumps(stored),
    ).id


def reopen_study(store: Store, study_id: int, trials: int) -> list[Trial]:
    """Continue a resumed study (``runner.reopen``) with its (maybe changed) number of
    ``trials``; returns its finished trials."""
    reopen(store, study_id, target_trials=trials)
    return [
        t
        for t in store.trials(study_id)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ]


def _without_trials(raw: dict[str, Any]) -> dict[str, Any]:
    study = {k: v for k, v in raw.get("study", {}).items() if k != "trials"}
    kept = {k: v for k, v in raw.items() if k not in (OBJECTIVES_KEY, BASELINE_KEY)}
    return {**kept, "study": study}


def _trainable(
    resolved: Resolved,
    store_url: str,
    trainable: Callable[..., None] | None,
    splits: Splits | None = None,
) -> tuple[Callable[..., None], Job | BenchmarkJob | None]:
    """The trainable of a study (``trainable`` replaces it) and its ``job`` argument (None
    for a study of the user's own function, which has no architecture or benchmark);
    ``splits``: the driver's, shipped in the job (``check_data``)."""
    cfg = resolved.config
    if trainable is not None and resolved.architecture is None and resolved.benchmark is None:
        return trainable, None
    if resolved.benchmark is not None:
        assert resolved.benchmark_options is not None
        job = BenchmarkJob(
            benchmark=resolved.benchmark.name,
            options=resolved.benchmark_options.model_dump_json(),
            seed=cfg.study.seed,
        )
        return trainable or run_benchmark_trial, job
    assert resolved.architecture and resolved.dataset and resolved.dataset_options
    ckpt_dir = checkpoint_dir(resolved, store_url)
    job = Job(
        architecture=resolved.architecture.name,
        dataset=resolved.dataset.name,
        dataset_options=resolved.dataset_options.model_dump_json(),
        seed=cfg.study.seed,
        threads=max(1, int(cfg.resources.cpus_per_trial)),
        checkpoint_dir=str(ckpt_dir) if ckpt_dir else None,
        splits=splits,
    )
    return trainable or run_trial, job


def run_study(
    resolved: Resolved,
    store: Store,
    *,
    address: str | None = None,
    resume: bool = False,
    on_event: Progress | None = None,
    trainable: Callable[..., None] | None = None,
) -> int:
    """Run (or resume) the search of a resolved config; returns the study id."""

    cfg = resolved.config
    existing = check_study(store, resolved, resume)
    splits, baseline = prepare(resolved, new=existing is None)

    def start() -> None:  # before any write: a cluster that cannot run it leaves no trace
        start_ray(address, resolved.path, cfg.resources)

    create = functools.partial(create_study, store, resolved, baseline)
    with driving(store, existing, start, create) as study_id:
        done = reopen_study(store, study_id, cfg.study.trials) if existing else []
        on_event = on_event or (lambda kind, data: None)
        _search(resolved, store, study_id, done, on_event, trainable, splits)
    return study_id


def _search(
    resolved: Resolved,
    store: Store,
    study_id: int,
    done: list[Trial],
    on_event: Progress,
    trainable: Callable[..., None] | None,
    splits: Splits | None = None,
) -> None:
    """Run the trials a study still needs (``done``: its finished ones; ``splits``: the
    driver's, for the workers)."""
    cfg = resolved.config
    remaining = cfg.study.trials - len(done)
    strategy = resolved.make_strategy()
    if isinstance(strategy, OneShotStrategy):
        supernet = next((t for t in done if "derived" in t.attrs_dict), None)
        if supernet is None:
            fn, job = _trainable(resolved, store.url, None, splits)
            one_shot = OneShotJob(
                job,
                strategy.name,
                strategy.options.model_dump_json(),
                strategy.space,
                resolved.direction,
            )
            _fit(resolved, store, study_id, on_event, run_one_shot_trial, one_shot, 1, None)
            supernet = next((t for t in store.trials(study_id) if "derived" in t.attrs_dict), None)
            if supernet is None:  # it failed or was interrupted: the store says which
                if store.get_study(cfg.study.name).state == StudyState.RUNNING:
                    store.set_study_state(study_id, StudyState.FINISHED)
                    study_end_hook(store, study_id)
                return
        derived = supernet.attrs_dict["derived"]
        trained = {params_key(t.params_dict) for t in done if t.state == TrialState.COMPLETE}
        strategy = FixedParams(resolved.space, derived, trained)
        remaining = len(strategy.todo)
    elif done:
        strategy.replay_values((t.params_dict, _objective_values(store, t, resolved)) for t in done)
    if remaining <= 0:
        store.set_study_state(study_id, StudyState.FINISHED)
        return
    known = {
        params_key(t.params_dict): _objective_values(store, t, resolved)
        for t in done
        if t.state == TrialState.COMPLETE
    }
    searcher = strategy_searcher(strategy, [name for name, _ in resolved.objectives], known)
    fn, job = _trainable(resolved, store.url, trainable, splits)
    _fit(resolved, store, study_id, on_event, fn, job, remaining, searcher)


def _objective_values(store: Store, trial: Trial, resolved: Resolved) -> list[float] | None:
    """A stored trial's value of every objective; None unless it completed with all of them."""
    if trial.state != TrialState.COMPLETE:
        return None
    metrics = {**store.final_metrics(trial.id), resolved.config.study.metric: trial.value}
    values = [metrics.get(name) for name, _ in resolved.objectives]
    return None if any(v is None for v in values) else [float(v) for v in values]


def _fit(
    resolved: Resolved,
    store: Store,
    study_id: int,
    on_event: Progress,
    fn: Callable[..., None],
    job: Any,
    num_samples: int,
    searcher: Any,
) -> None:
    """Run ``num_samples`` trials of ``fn`` (proposed by ``searcher``, a StrategySearcher;
    None: one trial of a one-shot strategy) and store them."""
    cfg = resolved.config
    run_trials(
        fn,
        job,
        store=store,
        study_id=study_id,
        study=cfg.study,
        resources=cfg.resources,
        callback=_store_callback(store, study_id, resolved, on_event),
        # A benchmark trial is a lookup of milliseconds: one at a time is as fast, and keeps
        # a seeded search reproducible (each tell comes before the next ask).
        concurrency=1 if resolved.benchmark is not None else None,
        # the supernet phase of a one-shot study is not its end (unless it was interrupted)
        ends_study=searcher is not None,
        param_space=None if searcher else {"one_shot": cfg.strategy.name},
        search_alg=searcher,
        scheduler=make_scheduler(resolved) if searcher else None,
        num_samples=num_samples,
    )


def keep_artifact(path: str, ray_base: Path, dest: Path) -> str:
    """A trainer's file written inside Ray's per-run folder (removed after the run) is
    copied into ``dest`` (temp name, then rename) and that path returned; a file elsewhere
    stays where it is."""
    source = Path(path).resolve()
    if not source.is_file() or not source.is_relative_to(ray_base):
        return path
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / source.name
    tmp = dest / f".{source.name}.tmp-{os.getpid()}"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return str(target)
