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
    ``tell(params, None)`` marks the trial failed, which TPE ignores.
    """

    name = "tpe"

    class Options(BaseOptions):
        n_startup_trials: int = Field(10, ge=0, description="random trials before TPE starts")
        multivariate: bool = Field(True, description="model the dimensions jointly")

    options: Options

    def setup(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():  # multivariate is experimental in Optuna 4
            warnings.simplefilter("ignore", ExperimentalWarning)
            sampler = TPESampler(
                seed=self.seed,
                n_startup_trials=self.options.n_startup_trials,
                multivariate=self.options.multivariate,
            )
        self.study = optuna.create_study(direction=self.direction, sampler=sampler)
        self._distributions = self.space.to_optuna()
        self._pending: dict[ParamsKey, list[Trial]] = {}

    def ask(self) -> dict[str, Any]:
        """Ask Optuna for the next params; never runs out."""
        trial = self.study.ask(self._distributions)
        values = {**trial.params, **self.space.fixed()}
        params = {key: values[key] for key in self.space.dims}
        self._pending.setdefault(params_key(params), []).append(trial)
        return params

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Complete the trial asked with ``params``, or record it when it was never asked."""
        key = params_key(params)
        pending = self._pending.get(key)
        if not pending:
            self._add(params, value)
            return
        trial = pending.pop(0)
        if not pending:
            del self._pending[key]
        if value is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    def replay(self, history: Iterable[tuple[dict[str, Any], float | None]]) -> None:
        """Add past trials to the study without asking (the sampler's RNG does not advance)."""
        for params, value in history:
            self._add(params, value)

    def _add(self, params: dict[str, Any], value: float | None) -> None:
        """Add a finished trial that Optuna did not propose."""
        self.study.add_trial(
            optuna.trial.create_trial(
                params={key: params[key] for key in self._distributions},
                distributions=self._distributions,
                value=value,
                state=TrialState.FAIL if value is None else TrialState.COMPLETE,
            )
        )
