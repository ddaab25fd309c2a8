"""NNI's HPO tuners through autoplat's ask/tell interface (optional: ``autoplat[nni]``).

Microsoft NNI 3.0 (``pip install nni==3.0``; Anneal also needs ``hyperopt``). The tuner
gets the space in NNI's search-space format and proposes through
``generate_parameters``; results go back through ``receive_trial_result``. Every
categorical dimension is shown to NNI as a choice over its indices, int ranges as
``quniform``/``qloguniform``, float ranges as ``uniform``/``loguniform``; fixed
dimensions are merged into every proposal. ``setup`` seeds what NNI draws from: the global
``random`` and ``numpy.random`` generators, TPE's and random's ``seed``, and the
``RandomState`` that Evolution and Anneal make unseeded. NNI's GP and Metis tuners are left
out: with SciPy >= 1.11 they fail in ``scipy.optimize.minimize`` ("'x0' must only have
one dimension", nni/algorithms/hpo/gp_tuner/util.py), and with SciPy 1.9-1.10 on
``res.fun[0]`` (a float).
"""

from __future__ import annotations

import importlib
import math
import random
from typing import Any, Literal

from pydantic import Field

from autoplat.core.errors import PluginError
from autoplat.core.interfaces import Options as BaseOptions
from autoplat.core.interfaces import Strategy
from autoplat.core.space import Categorical, FloatRange, IntRange, ParamsKey, params_key

TUNERS = {  # name -> (module, class, constructor keywords besides optimize_mode)
    "anneal": ("nni.algorithms.hpo.hyperopt_tuner", "HyperoptTuner", {"algorithm_name": "anneal"}),
    "evolution": ("nni.algorithms.hpo.evolution_tuner", "EvolutionTuner", {}),
    "tpe": ("nni.algorithms.hpo.tpe_tuner", "TpeTuner", {}),
    "random": ("nni.algorithms.hpo.random_tuner", "RandomTuner", {}),
}


def nni_space(dims: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The NNI search space of the searchable dimensions (categoricals as index choices)."""
    space: dict[str, dict[str, Any]] = {}
    for key, dim in dims.items():
        if isinstance(dim, Categorical):
            space[key] = {"_type": "choice", "_value": list(range(len(dim.choices)))}
        elif isinstance(dim, IntRange):
            kind = "qloguniform" if dim.log else "quniform"
            space[key] = {"_type": kind, "_value": [dim.low, dim.high, 1 if dim.log else dim.step]}
        elif isinstance(dim, FloatRange):
            space[key] = {
                "_type": "loguniform" if dim.log else "uniform",
                "_value": [dim.low, dim.high],
            }
    return space


def _value(dim: Any, raw: Any) -> Any:
    """An NNI value back in the dimension's terms."""
    if isinstance(dim, Categorical):
        return dim.choices[int(raw)]
    if isinstance(dim, IntRange):
        step = 1 if dim.log else dim.step
        value = dim.low + round((float(raw) - dim.low) / step) * step
        return min(dim.high, max(dim.low, int(value)))
    return min(dim.high, max(dim.low, float(raw)))


class NNITuner(Strategy):
    """One of NNI's HPO tuners (``tuner``: anneal, evolution, tpe, random).

    ``ask`` returns None once the tuner has explored the whole space. A failed trial
    (None or NaN) is reported to the tuner as a failed trial end.
    """

    name = "nni"

    class Options(BaseOptions):
        tuner: Literal["anneal", "evolution", "tpe", "random"] = Field(
            "evolution", description="which NNI tuner proposes"
        )
        population: int = Field(32, ge=2, description="population size of the evolution tuner")

    options: Options

    def setup(self) -> None:
        module, cls, kwargs = TUNERS[self.options.tuner]
        try:
            tuner_class = getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            extra = " hyperopt" if self.options.tuner == "anneal" else ""
            raise PluginError(
                f"strategy 'nni' needs NNI ({exc}): pip install 'autoplat[nni]'{extra}"
            ) from None
        random.seed(self.seed)
        import numpy as np

        np.random.seed(self.seed % 2**32)
        if self.options.tuner == "evolution":
            kwargs = {**kwargs, "population_size": self.options.population}
        elif self.options.tuner in ("tpe", "random"):  # these seed their own generator
            kwargs = {**kwargs, "seed": self.seed}
        mode = "maximize" if self.direction == "maximize" else "minimize"
        self.tuner = tuner_class(optimize_mode=mode, **kwargs)
        self._dims = self.space.searchable()
        self.tuner.update_search_space(nni_space(self._dims))
        self._seed_generators(np)
        self._pending: dict[ParamsKey, list[tuple[int, dict[str, Any]]]] = {}
        self._next_id = 0

    def _seed_generators(self, np: Any) -> None:
        """Evolution and Anneal make an unseeded ``RandomState`` in ``update_search_space``."""
        state = np.random.RandomState(self.seed % 2**32)
        if self.options.tuner == "evolution":
            self.tuner.random_state = state
        elif self.options.tuner == "anneal":
            self.tuner.rval.rstate = state

    def ask(self) -> dict[str, Any] | None:
        """The tuner's next proposal, or None when it has nothing left."""
        from nni import NoMoreTrialError

        trial_id, self._next_id = self._next_id, self._next_id + 1
        try:
            raw = self.tuner.generate_parameters(trial_id)
        except NoMoreTrialError:
            return None
        params = {**self.space.fixed()}
        params.update({key: _value(dim, raw[key]) for key, dim in self._dims.items()})
        params = {key: params[key] for key in self.space.dims}
        self._pending.setdefault(params_key(params), []).append((trial_id, raw))
        return params

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Give the tuner the result of a proposal it made; others are ignored."""
        pending = self._pending.get(params_key(params))
        if not pending:
            return
        trial_id, raw = pending.pop(0)
        if value is None or math.isnan(value):
            self.tuner.trial_end(trial_id, False)  # NNI names it success or _success
        else:
            self.tuner.receive_trial_result(trial_id, raw, float(value))
