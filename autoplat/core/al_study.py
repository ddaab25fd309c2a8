"""`platform al`: the config, one Ray Tune trial per (acquisition, seed), and the curves.

Each trial runs ``active_learning.run_experiment`` and reports after every round; a Tune
callback in the driver stores the round (``al_rounds``) and its metrics. A resumed study
passes each experiment its stored rounds, so it continues where it stopped.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from autoplat.core.active_learning import (
    Acquisition,
    FileOracle,
    LoopSettings,
    SimulatedOracle,
    aulc,
    pool_preview,
    run_experiment,
)
from autoplat.core.config import (
    PluginSection,
    PluginsSection,
    ResourcesSection,
    Section,
    _plugin_options,
    _Source,
    _validation_message,
    params_problem,
    read_config,
)
from autoplat.core.errors import StoreError
from autoplat.core.interfaces import Architecture, Dataset, Options, Splits
from autoplat.core.registry import Registry, same_name
from autoplat.core.runner import (
    TRIAL_ERROR,
    Progress,
    driving,
    find_study,
    load_splits,
    reopen,
    run_trials,
    start_ray,
    trial_callback,
)
from autoplat.core.store import SUPERSEDED, ALRound, Store, StudyState, TrialState

KIND = "al"
METRIC = "test_accuracy"
MAX_SEEDS = 10_000


class ALStudySection(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seeds: int | list[int] = Field(3, description="how many seeds (0..n-1), or a list")
    data_seed: int = Field(0, ge=0, description="fixes the pool/val/test split")
    storage: str | None = None
    workdir: str | None = None  # Ray Tune's per-run folder, as in a search's [study]
    keep_ray_files: bool = False

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and not 1 <= value <= MAX_SEEDS:
            raise ValueError(f"give 1 to {MAX_SEEDS} seeds (each is a run of every acquisition)")
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("needs a non-empty list of distinct seeds")
        if isinstance(value, list) and min(value) < 0:
            raise ValueError("seeds must be >= 0; list seeds such as [0, 1, 2], or give a count")
        return value

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class LoopSection(Section):
    acquisitions: list[str] = Field(min_length=1)
    initial: int = Field(20, ge=1, description="labels before the first query")
    initial_sampling: Literal["random", "stratified"] = "random"
    batch_size: int = Field(10, ge=1, description="labels queried per round")
    budget: int | None = Field(None, ge=1, description="total labels, the initial ones included")
    rounds: int | None = Field(None, ge=0, description="query rounds after the initial one")
    warm_start: bool = False
    mc_samples: int = Field(20, ge=2, le=10_000, description="forward passes per MC-dropout")
    committee_size: int = Field(3, ge=2, le=100, description="models trained per QBC round")


class OracleSection(Section):
    name: Literal["simulated", "file"] = "simulated"
    path: str = "runs/labels"  # the file oracle's folder (one subfolder per study)
    format: Literal["csv", "jsonl"] = "csv"
    poll_seconds: float = Field(2.0, gt=0, le=3600)
    timeout_seconds: float | None = Field(
        None, gt=0, description="stop an experiment that waited this long for labels"
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        # Ray runs trials in their own working directories: fix the folder now.
        return str(Path(path).expanduser().absolute())


class TrainingSection(Section):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(50, ge=1)
    warmup_epochs: int = Field(0, ge=0)


class ALConfig(Section):
    study: ALStudySection
    model: PluginSection
    dataset: PluginSection
    al: LoopSection
    training: TrainingSection = Field(default_factory=TrainingSection)
    oracle: OracleSection = Field(default_factory=OracleSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    plugins: PluginsSection = Field(default_factory=PluginsSection)


@dataclass
class ResolvedAL:
    """A validated `platform al` config with its plugins looked up."""

    path: Path
    config: ALConfig
    raw: dict[str, Any]
    architecture: Architecture
    dataset: Dataset
    dataset_options: Options
    acquisitions: list[Acquisition]
    source: _Source

    def check_data(self, splits: Splits) -> None:
        """Refuse, before Ray starts, params that cannot build the model for this data, and
        an initial set that leaves nothing in the pool to query (ConfigError)."""
        reason = params_problem(self.architecture, self.params, splits.spec)
        if reason is not None:
            raise self.source.error(("model",), reason)
        initial, pool = self.config.al.initial, len(splits.train[0])
        if initial >= pool:
            raise self.source.error(
                ("al", "initial"),
                f"{initial} initial labels, but the pool of dataset '{self.dataset.name}' has "
                f"only {pool} examples, which leaves nothing to query; set initial below {pool}",
            )

    @property
    def settings(self) -> LoopSettings:
        al = self.config.al
        return LoopSettings(
            initial=al.initial,
            stratified=al.initial_sampling == "stratified",
            batch_size=al.batch_size,
            budget=al.budget,
            rounds=al.rounds,
            warm_start=al.warm_start,
            mc_samples=al.mc_samples,
            committee_size=al.committee_size,
        )

    @property
    def params(self) -> dict[str, Any]:
        """The model's params (its defaults overlaid with ``[model]``) and the trainer's."""
        return {
            **self.architecture.defaults,
            **self.config.model.options(),
            **self.config.training.model_dump(),
        }


def load_al_config(path: str | Path, registry: Registry) -> ResolvedAL:
    """Read and validate a `platform al` config; ConfigError says file:line: key."""
    path = Path(path)
    raw, source = read_config(path)
    try:
        config = ALConfig.model_validate(raw)
    except ValidationError as exc:
        raise _validation_message(exc, ALConfig, source) from None

    def lookup(kind: str, name: str, loc: tuple[str | int, ...]) -> Any:
        return source.lookup(registry, kind, name, loc)

    arch = lookup("architectures", config.model.name, ("model", "name"))
    dataset = lookup("datasets", config.dataset.name, ("dataset", "name"))
    dataset_options = _plugin_options(dataset.Options, config.dataset.options(), source, "dataset")
    modality, tasks = dataset.kind(dataset_options)
    if arch.task != "classification":
        raise source.error(
            ("model", "name"),
            f"active learning trains classifiers; '{arch.name}' is a {arch.task} model",
        )
    if "classification" not in tasks or modality not in arch.modalities:
        raise source.error(
            ("dataset", "name"),
            f"dataset '{dataset.name}' ({modality}, tasks {', '.join(tasks)}) cannot feed "
            f"classifier '{arch.name}' ({', '.join(arch.modalities)}); pick a matching "
            "dataset, its options, or another model",
        )
    acquisitions = []
    for i, name in enumerate(config.al.acquisitions):
        if same_name(name) in {same_name(n) for n in config.al.acquisitions[:i]}:
            raise source.error(("al", "acquisitions"), f"'{name}' is listed twice")
        acquisitions.append(lookup("acquisitions", name, ("al", "acquisitions")))
    if config.oracle.name == "file" and config.al.initial_sampling == "stratified":
        raise source.error(
            ("al", "initial_sampling"),
            "stratified sampling reads the labels, which a file oracle does not have yet; "
            'use initial_sampling = "random"',
        )
    oracle = config.oracle
    if oracle.timeout_seconds is not None and oracle.timeout_seconds < oracle.poll_seconds:
        raise source.error(
            ("oracle", "timeout_seconds"),
            f"timeout_seconds {oracle.timeout_seconds:g} is below poll_seconds "
            f"{oracle.poll_seconds:g}; give a person longer than one look at the folder",
        )
    if config.al.budget is None and config.al.rounds is None:
        raise source.error(("al",), "set budget (total labels) or rounds (or both)")
    if config.al.budget is not None and config.al.budget < config.al.initial:
        raise source.error(
            ("al", "budget"), f"budget {config.al.budget} is below initial {config.al.initial}"
        )
    resolved = ResolvedAL(
        path=path,
        config=config,
        raw=raw,
        architecture=arch,
        dataset=dataset,
        dataset_options=dataset_options,
        acquisitions=acquisitions,
        source=source,
    )
    _check_ranges(config, arch, source)
    reason = params_problem(arch, resolved.params)
    if reason is not None:
        raise source.error(("model",), reason)
    return resolved


def _check_ranges(config: ALConfig, arch: Architecture, source: _Source) -> None:
    """Every ``[model]`` and ``[training]`` value is in its param's range (``arch.ranges``)."""
    ranges = arch.ranges()
    for section, values in (
        ("model", config.model.options()),
        ("training", config.training.model_dump()),
    ):
        for key, value in values.items():
            if key in ranges and (problem := ranges[key].problem(value)) is not None:
                raise source.error((section, key), f"{problem}; change it in [{section}]")


# -- the Ray trial -------------------------------------------------------------------


@dataclass(frozen=True)
class ALJob:
    """What a worker needs to run experiments (picklable; the same for every trial)."""

    study: str
    architecture: str
    params: dict[str, Any]
    dataset: str
    dataset_options: str  # JSON
    data_seed: int
    threads: int
    settings: LoopSettings
    oracle: dict[str, Any]  # OracleSection as a dict
    done: dict[str, list[dict[str, Any]]]  # "acquisition/seed" -> stored rounds


WANTED = "labels_wanted"
"""A worker's result key and a trial's attr: what its file oracle waits for (JSON)."""


def experiment_key(acquisition: str, seed: int) -> str:
    return f"{acquisition}/{seed}"


def run_al_trial(config: dict[str, Any], job: ALJob) -> None:
    """The Ray Tune trainable of one (acquisition, seed) experiment."""
    import torch
    from ray import tune

    from autoplat.core.interfaces import Splits
    from autoplat.core.registry import get_registry
    from autoplat.core.training import train_classification

    torch.set_num_threads(job.threads)
    name, seed = config["experiment"]["acquisition"], int(config["experiment"]["seed"])
    registry = get_registry()
    acquisition = registry.get("acquisitions", name)
    arch = registry.get("architectures", job.architecture)
    splits = load_splits(job.dataset, job.dataset_options, job.data_seed)
    reason = arch.check_params(job.params, splits.spec)
    if reason is not None:
        raise ValueError(reason)
    x_pool, _ = splits.train
    arch_params = {k: v for k, v in job.params.items() if k not in TRAINING_KEYS}

    def train(labeled: list[int], labels: list[int], train_seed: int, model):
        if model is None:
            torch.manual_seed(train_seed)
            model = arch.build(arch_params, splits.spec)
        data = Splits(
            train=(x_pool[labeled], torch.tensor(labels, dtype=torch.long)),
            val=splits.val,
            test=splits.test,
            spec=splits.spec,
        )
        metrics = train_classification(model, data, job.params, lambda *_: None, train_seed)
        return model, metrics

    if job.oracle["name"] == "file":
        spec = splits.spec
        oracle = FileOracle(
            Path(job.oracle["path"]) / job.study,
            f"{name}-seed{seed}",
            spec.label_names or tuple(str(i) for i in range(spec.num_classes)),
            fmt=job.oracle["format"],
            poll_seconds=job.oracle["poll_seconds"],
            timeout_seconds=job.oracle["timeout_seconds"],
            sources=splits.train_sources,
            preview=pool_preview(splits),
            notify=lambda wanted: tune.report({WANTED: json.dumps(wanted)}),
        )
    else:
        oracle = SimulatedOracle(splits.train[1])

    def report(row: dict[str, Any]) -> None:
        tune.report(
            {
                **row,
                "queried": json.dumps(row["queried"]),
                "labels": json.dumps(row["labels"]),
            }
        )

    run_experiment(
        splits,
        acquisition,
        oracle,
        job.settings,
        seed,
        train,
        report,
        done=job.done.get(experiment_key(name, seed)),
    )


TRAINING_KEYS = set(TrainingSection.model_fields)


# -- the driver ----------------------------------------------------------------------


def _callback(store: Store, study_id: int, on_event: Progress):
    class ALCallback(trial_callback()):
        """Stores each experiment as a trial and each of its rounds as an al_rounds row."""

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.waiting: set[int] = set()  # trials whose oracle waits for labels

        def who(self, trial) -> dict[str, Any]:
            return dict(trial.config["experiment"])

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.trial_id in self.ids:  # a retry after its worker died: same row
                return
            params = dict(trial.config["experiment"])
            earlier = [t for t in store.trials(study_id) if t.params_dict == params]
            row = store.start_trial(study_id, params, ray_trial_id=trial.trial_id)
            self.ids[trial.trial_id] = row.id
            for old in earlier:  # history: the experiment's state is now this trial's
                if SUPERSEDED not in old.attrs_dict:
                    store.set_trial_attrs(old.id, **{SUPERSEDED: row.number})
            on_event("start", params)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if TRIAL_ERROR in result:  # stored as the trial's error when it completes
                return
            trial_id = self.ids[trial.trial_id]
            if WANTED in result:  # its file oracle waits for a person's labels
                wanted = json.loads(result[WANTED])
                store.set_trial_attrs(trial_id, **{WANTED: wanted})
                self.waiting.add(trial_id)
                on_event("waiting", {**trial.config["experiment"], **wanted})
                return
            numeric = {
                k: float(result[k])
                for k in ("train_loss", "val_accuracy", "test_accuracy", "select_seconds")
                if k in result
            }
            store.add_metrics(trial_id, int(result["round"]), numeric)
            metrics = {
                **numeric,
                "queried": json.loads(result["queried"]),
                "labels": json.loads(result["labels"]),
            }
            store.add_al_round(
                ALRound(
                    study_id=study_id,
                    trial_id=trial_id,
                    acquisition=trial.config["experiment"]["acquisition"],
                    seed=int(trial.config["experiment"]["seed"]),
                    round=int(result["round"]),
                    n_labeled=int(result["n_labeled"]),
                    metrics=json.dumps(metrics),
                )
            )
            if trial_id in self.waiting:  # labeled
                self.waiting.discard(trial_id)
                store.set_trial_attrs(trial_id, **{WANTED: None})
            on_event(
                "round",
                {
                    **trial.config["experiment"],
                    **numeric,
                    **{k: int(result[k]) for k in ("n_labeled", "round", "rounds")},
                },
            )

        def completed(self, trial, last: dict[str, Any]) -> None:
            finished = bool(last.get("finished"))
            state = TrialState.COMPLETE if finished else TrialState.INTERRUPTED
            store.finish_trial(self.ids[trial.trial_id], state, value=last.get(METRIC))
            on_event("end", {**trial.config["experiment"], "state": state.value})

    return ALCallback(store, on_event)


def stored_rounds(store: Store, study_id: int) -> dict[str, list[dict[str, Any]]]:
    """Each experiment's stored rounds, in order, as ``run_experiment``'s ``done``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in store.al_rounds(study_id):
        rounds = out.setdefault(experiment_key(row.acquisition, row.seed), [])
        if row.round == len(rounds):  # a gap would mean a lost round: start again from it
            m = row.metrics_dict
            rounds.append({"queried": m["queried"], "labels": m["labels"]})
    return out


def run_al(
    resolved: ResolvedAL,
    store: Store,
    *,
    address: str | None = None,
    resume: bool = False,
    on_event: Progress | None = None,
) -> int:
    """Run (or resume) every (acquisition, seed) experiment of a config; returns the study id."""
    on_event = on_event or (lambda kind, data: None)
    cfg = resolved.config
    names = list(cfg.al.acquisitions)  # as written: stored experiment keys use them
    seeds = cfg.study.seed_list()
    existing = find_study(store, cfg.study.name, resume)
    if existing is not None and (
        existing.kind != KIND or json.loads(existing.config) != resolved.raw
    ):
        raise StoreError(
            f"--resume: study '{cfg.study.name}' was started from a different config; use a "
            "new [study].name for a new experiment"
        )
    # bad data or params fail here, before Ray starts or anything is stored
    resolved.check_data(
        load_splits(
            resolved.dataset.name, resolved.dataset_options.model_dump_json(), cfg.study.data_seed
        )
    )

    def start() -> None:  # before any write: a cluster that cannot run it leaves no trace
        start_ray(address, resolved.path, cfg.resources)

    def create() -> int:
        return store.create_study(
            cfg.study.name,
            kind=KIND,
            direction="maximize",
            metric=METRIC,
            target_trials=len(names) * len(seeds),
            config=json.dumps(resolved.raw),
        ).id

    with driving(store, existing, start, create) as study_id:
        if existing is not None:
            reopen(store, study_id)
        _run_experiments(resolved, store, study_id, on_event)
    return study_id


def _run_experiments(resolved: ResolvedAL, store: Store, study_id: int, on_event: Progress) -> None:
    """Run the (acquisition, seed) experiments a study has not finished."""
    from ray import tune

    cfg = resolved.config
    names = list(cfg.al.acquisitions)  # as written: stored experiment keys use them
    seeds = cfg.study.seed_list()
    finished = {
        experiment_key(t.params_dict["acquisition"], t.params_dict["seed"])
        for t in store.trials(study_id)
        if t.state == TrialState.COMPLETE
    }
    todo = [
        {"acquisition": a, "seed": s}
        for a in names
        for s in seeds
        if experiment_key(a, s) not in finished
    ]
    if not todo:
        store.set_study_state(study_id, StudyState.FINISHED)
        return
    res = cfg.resources
    job = ALJob(
        study=cfg.study.name,
        architecture=resolved.architecture.name,
        params=resolved.params,
        dataset=resolved.dataset.name,
        dataset_options=resolved.dataset_options.model_dump_json(),
        data_seed=cfg.study.data_seed,
        threads=max(1, int(res.cpus_per_trial)),
        settings=resolved.settings,
        oracle=cfg.oracle.model_dump(),
        done=stored_rounds(store, study_id),
    )
    run_trials(
        run_al_trial,
        job,
        store=store,
        study_id=study_id,
        study=cfg.study,
        resources=res,
        callback=_callback(store, study_id, on_event),
        param_space={"experiment": tune.grid_search(todo)},
        num_samples=1,
    )


# -- curves --------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def learning_curves(rounds: list[ALRound], metric: str = METRIC) -> dict[str, Any]:
    """Per acquisition: the mean +- std of ``metric`` at each label count over seeds, and AULC.

    Only complete curves (seeds with every label count of the longest one) enter the
    AULC, so partial runs never flatter it.
    """
    curves: dict[str, dict[int, dict[int, float]]] = {}  # acquisition -> seed -> n -> value
    for r in rounds:
        value = r.metrics_dict.get(metric)
        if isinstance(value, int | float):
            curves.setdefault(r.acquisition, {}).setdefault(r.seed, {})[r.n_labeled] = value
    out: dict[str, Any] = {}
    for name, by_seed in sorted(curves.items()):
        counts = sorted({n for points in by_seed.values() for n in points})
        points = {
            n: _mean_std([p[n] for p in by_seed.values() if n in p])
            + (sum(n in p for p in by_seed.values()),)
            for n in counts
        }
        complete = [p for p in by_seed.values() if sorted(p) == counts]
        areas = [aulc(counts, [p[n] for n in counts]) for p in complete]
        out[name] = {
            "labels": counts,
            "mean": [points[n][0] for n in counts],
            "std": [points[n][1] for n in counts],
            "seeds": [points[n][2] for n in counts],
            "aulc": _mean_std(areas) if areas else None,
            "complete_seeds": len(complete),
        }
    return out
