"""Random search: the sweep everyone runs - random mixtures at the largest runnable fidelity."""

from __future__ import annotations

from collections.abc import Sequence

from mfms_bo.strategies.base import Strategy
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    """Uniform (Dirichlet(1)) mixtures, or pool members without replacement, run at the
    largest size the worker can run for the maximum steps; recommends the best run."""

    name = "random"

    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        g = self._generator(history, pending)
        size = self._runnable_max(max_model_size)
        steps = self.space.fidelities.steps_max
        pool = self.space.candidates
        if pool is None:
            return [self._spec(w, size, steps) for w in self.space.mixtures.sample(n, g)]
        used = [*(r.spec for r in history if r.spec.model_size == size), *pending]
        fresh, _ = self._shuffled_pool(used, g)
        return [self._spec(pool[i], size, steps) for i in fresh[:n]]
