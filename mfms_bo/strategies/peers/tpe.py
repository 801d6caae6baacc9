"""``tpe``: Optuna's multivariate TPE sampler, single-fidelity at the largest runnable size.

What a practitioner gets from ``optuna`` out of the box: ``TPESampler(multivariate=True)``
over the mixture, each trial trained at the largest size the worker can run for the
target steps, the objective its final validation objective. Its ``k`` parameters are the
unit-cube coordinates of :func:`~mfms_bo.strategies.peers.unit_to_mixture` (a Dirichlet(1)
map, so TPE's random start-up samples mixtures uniformly on the simplex).

Stateless: every call builds a fresh in-memory study from the history (finished trials as
``COMPLETE`` or ``FAIL``, pending ones as ``RUNNING``) and asks it once per wanted trial.
The raw ``x`` Optuna asked for is kept in ``spec.metadata["tpe"]["x"]``, so the study is
rebuilt with exactly the parameters it proposed - also on a pool, where the trial runs the
nearest pool member not yet run but Optuna is told the point it asked for (its model of
the objective stays a function of its own parameters). The sampler is seeded from
``(seed, len(history), len(pending))``: the same history gives the same proposal in any
process. ``constant_liar`` makes a batch, and the pending trials, push the sampler away
from points already being run - Optuna's own answer to parallel workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from mfms_bo.limits import whole_number
from mfms_bo.recommend import final_objective
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Strategy
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["TPE"]


class TPE(Strategy):
    """Optuna ``TPESampler(multivariate=True)`` at the largest runnable fidelity.

    Args:
        n_startup_trials: random trials before TPE's model kicks in (Optuna's default, 10).
        constant_liar: treat pending trials as bad results while they run (batches).
    """

    name = "tpe"

    def __init__(self, space: SearchSpace, seed: int = 0, n_startup_trials: int = 10,
                 constant_liar: bool = True) -> None:
        super().__init__(space, seed)
        from mfms_bo.strategies.peers import require

        require("optuna", self.name)  # fail at study creation, not at the first proposal
        self.n_startup_trials = whole_number("n_startup_trials", n_startup_trials, 0, 10_000)
        self.constant_liar = bool(constant_liar)

    def _fidelity(self, max_model_size: float | None) -> tuple[float, int]:
        fid = self.space.fidelities
        return self._runnable_max(max_model_size), int(min(fid.target_steps, fid.steps_max))

    def _x_of(self, spec: TrialSpec) -> list[float]:
        """The parameters Optuna asked for, or a preimage for a trial it did not propose."""
        from mfms_bo.strategies.peers import mixture_to_unit

        raw = (spec.metadata.get("tpe") or {}).get("x") if spec.metadata else None
        if isinstance(raw, list) and len(raw) == self.space.k:
            return [float(v) for v in raw]
        w = self.space.mixtures.validate(spec.mixture)
        return mixture_to_unit(self.space, w)

    def study(self, history: Sequence[TrialResult], pending: Sequence[TrialSpec],
              model_size: float, steps: int) -> Any:
        """A fresh in-memory Optuna study holding the trials run at ``(model_size, steps)``.

        Trials at other fidelities are left out: TPE is a single-fidelity method, and mixing
        in cheaper runs' losses would compare numbers on different scales.
        """
        from mfms_bo.strategies.peers import require

        optuna = require("optuna", self.name)
        from optuna.trial import TrialState, create_trial

        dists = self._distributions()
        seed = (self.seed * 1_000_003 + 7919 * len(history) + len(pending)) % (2**31 - 1)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created..."
        try:
            with warnings.catch_warnings():
                # multivariate and constant_liar are flagged experimental; they are what
                # the TPE paper's successors and Optuna's docs recommend for this use.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(
                    multivariate=True, constant_liar=self.constant_liar, seed=seed,
                    n_startup_trials=self.n_startup_trials)
            st = optuna.create_study(direction="minimize", sampler=sampler)
        finally:
            optuna.logging.set_verbosity(verbosity)

        def params(spec: TrialSpec) -> dict[str, float]:
            return {f"x{i}": v for i, v in enumerate(self._x_of(spec))}

        for r in history:
            if r.spec.model_size != model_size or r.spec.steps != steps:
                continue
            val = final_objective(r, self.space) if r.completed else None
            if val is None:
                st.add_trial(create_trial(state=TrialState.FAIL, params=params(r.spec),
                                          distributions=dists))
            else:
                st.add_trial(create_trial(value=float(val), params=params(r.spec),
                                          distributions=dists))
        for p in pending:
            if p.model_size == model_size and p.steps == steps:
                st.add_trial(create_trial(state=TrialState.RUNNING, params=params(p),
                                          distributions=dists))
        return st

    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        return {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(self.space.k)}

    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        from mfms_bo.strategies.peers import nearest_fresh, unit_to_mixture

        size, steps = self._fidelity(max_model_size)
        st = self.study(history, pending, size, steps)
        pool = self.space.candidates
        used = [*(r.spec for r in history), *pending]
        dists = self._distributions()
        out: list[TrialSpec] = []
        for _ in range(n):
            trial = st.ask(dists)  # stays RUNNING: the next ask sees it (constant liar)
            x = [float(trial.params[f"x{i}"]) for i in range(self.space.k)]
            w = unit_to_mixture(self.space, x)
            if pool is not None:
                i = nearest_fresh(self.space, w, [*used, *out], size, steps)
                if i is None:
                    break  # every pool member has run at this fidelity
                w = pool[i]
            out.append(self._spec(w, size, steps, {"tpe": {"x": x}}))
        return out
