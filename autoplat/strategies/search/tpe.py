"""TPE: Optuna's Tree-structured Parzen Estimator through Optuna's ask/tell API."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import TPESampler
from optuna.trial import Trial, TrialState
from pydantic import Field

from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Strategy
from autoplat.core.space import ParamsKey, params_key


class TPESearch(Strategy):
    """Optuna's ``TPESampler`` on an in-memory study.

    Fixed dimensions are not shown to Optuna; they are merged into every proposal.
    ``tell(params, None)`` marks the trial failed, which TPE ignores. Intermediate values
    (``report``) are recorded on the Optuna trial, and a trial a scheduler stopped early
    (``prune``) is told as pruned: TPE ranks pruned trials after the completed ones, by
    the furthest step they reached, then by their value there.
    """

    name = "tpe"

    class Options(BaseOptions):
        n_startup_trials: int = Field(10, ge=0, description="random trials before TPE starts")
        multivariate: bool = Field(True, description="model the dimensions jointly")

    options: Options

    def setup(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = self._make_study()
        self._distributions = self.space.to_optuna()
        self._pending: dict[ParamsKey, list[Trial]] = {}
        self._last_step: dict[int, int] = {}  # Optuna trial number -> last reported step

    def _make_study(self) -> optuna.Study:
        """A single-objective Optuna study with the TPE sampler."""
        with warnings.catch_warnings():  # multivariate is experimental in Optuna 4
            warnings.simplefilter("ignore", ExperimentalWarning)
            sampler = TPESampler(
                seed=self.seed,
                n_startup_trials=self.options.n_startup_trials,
                multivariate=self.options.multivariate,
            )
        return optuna.create_study(direction=self.direction, sampler=sampler)

    def ask(self) -> dict[str, Any]:
        """Ask Optuna for the next params; never runs out."""
        trial = self.study.ask(self._distributions)
        values = {**trial.params, **self.space.fixed()}
        params = {key: values[key] for key in self.space.dims}
        self._pending.setdefault(params_key(params), []).append(trial)
        return params

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Complete the trial asked with ``params``, or record it when it was never asked."""
        self.tell_values(params, None if value is None else [value])

    def tell_values(self, params: dict[str, Any], values: list[float] | None) -> None:
        """``tell`` with the value of each of the Optuna study's objectives."""
        values = None if values is None else values[: len(self.study.directions)]
        trial = self._pop(params)
        if trial is None:
            self._add(params, values)
        elif values is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, values)

    def report(self, params: dict[str, Any], step: int, value: float) -> None:
        """Record an intermediate value on the running trial; a step seen before is skipped."""
        # (a paused trial resumes without a checkpoint: it reports its first epochs again)
        pending = self._pending.get(params_key(params))
        if not pending:
            return
        trial = pending[0]
        if step > self._last_step.get(trial.number, -1):
            trial.report(value, step)
            self._last_step[trial.number] = step

    def prune(self, params: dict[str, Any]) -> None:
        """Tell the trial as pruned: Optuna keeps its last intermediate value as its value."""
        trial = self._pop(params)
        if trial is None:
            self._add(params, None)
        else:
            self.study.tell(trial, state=TrialState.PRUNED)

    def _pop(self, params: dict[str, Any]) -> Trial | None:
        """The oldest running trial asked with ``params`` (None when there is none)."""
        key = params_key(params)
        pending = self._pending.get(key)
        if not pending:
            return None
        trial = pending.pop(0)
        if not pending:
            del self._pending[key]
        self._last_step.pop(trial.number, None)
        return trial

    def replay(self, history: Iterable[tuple[dict[str, Any], float | None]]) -> None:
        """Add past trials to the study without asking (the sampler's RNG does not advance)."""
        self.replay_values((params, None if v is None else [v]) for params, v in history)

    def replay_values(self, history: Iterable[tuple[dict[str, Any], list[float] | None]]) -> None:
        """``replay`` with every objective's value."""
        for params, values in history:
            self._add(params, None if values is None else values[: len(self.study.directions)])

    def _add(self, params: dict[str, Any], values: list[float] | None) -> None:
        """Add a finished trial that Optuna did not propose."""
        self.study.add_trial(
            optuna.trial.create_trial(
                params={key: params[key] for key in self._distributions},
                distributions=self._distributions,
                values=values,
                state=TrialState.FAIL if values is None else TrialState.COMPLETE,
            )
        )
