"""BOHB (Falkner et al. 2018) and its single-fidelity remainder, ``tpe-random``.

"BOHB: Robust and Efficient Hyperparameter Optimization at Scale" (ICML 2018). HyperBand
decides how many epochs each trial gets (Ray Tune's ``HyperBandForBOHB``, scheduler
``hyperband_bohb``, the default when the config names no ``[scheduler]``); a TPE model
proposes the trials. Here the model is Optuna's multivariate ``TPESampler``: trials
stopped at a lower budget are told as pruned with their intermediate values, and TPE
ranks them after the completed ones, deeper budgets first. The paper instead fits one
model per budget and proposes from the largest budget with enough observations, and
its good group is the top 15% (Optuna's default: 10%, at most 25 trials).

BOHB needs budgets: epochs of a real training run. A tabular benchmark (``[benchmark]``,
e.g. nb201) has one fidelity, final accuracies only, so there is nothing for HyperBand
to allocate and what is left is TPE plus the random proposals: that strategy is
``tpe-random``, and it is not BOHB.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from autoplat.strategies.search.tpe import TPESearch


class TPERandom(TPESearch):
    """Optuna's TPE with a ``random_fraction`` of uniformly random proposals.

    BOHB's model part (the paper draws 1/3 of the proposals at random, which keeps
    HyperBand's guarantees when the model misleads), for single-fidelity problems.
    """

    name = "tpe-random"

    class Options(TPESearch.Options):
        random_fraction: float = Field(
            1 / 3, ge=0, le=1, description="share of proposals drawn uniformly at random"
        )

    options: Options

    def ask(self) -> dict[str, Any]:
        """A uniformly random proposal with probability ``random_fraction``, else TPE's."""
        if self.rng.random() < self.options.random_fraction:
            sample = self.space.sample(self.rng)
            self.study.enqueue_trial({key: sample[key] for key in self._distributions})
        return super().ask()


class BOHB(TPERandom):
    """``tpe-random`` under HyperBand's budgets (scheduler ``hyperband_bohb``).

    ``needs_budgets``: a study with one fidelity (a lookup table) should refuse it and
    name ``tpe-random`` instead.
    """

    name = "bohb"
    default_scheduler = "hyperband_bohb"
    needs_budgets: ClassVar[bool] = True
    single_fidelity: ClassVar[str] = "tpe-random"
