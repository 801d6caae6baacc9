"""The uniform mixture: no search at all, the zero line of the benchmark tables.

Stratified sampling (every domain in equal proportion) is what a team trains on when it does
not tune the mixture, and Aioli (Chen et al. 2024) found that few mixing methods reliably beat
it; a search tool's cost is only worth paying for what it gains over this line. The strategy
proposes nothing and recommends, from the first moment (an empty history: the harness scores
it at cost 0), the uniform mixture - projected into the mixture bounds when they exclude it,
the pool member closest to it on a pool - or a mixture the user names (``mixture`` option,
e.g. the mixture a team trains on today, to see what search would gain over it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mfms_bo.recommend import Recommendation
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Strategy
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["UniformMixture"]

_POOL_TOL = 1e-6  # max |w_i - c_i| for a user mixture to be a pool member


class UniformMixture(Strategy):
    """Proposes nothing; recommends the uniform (or a given) mixture.

    Args:
        space: search space.
        seed: unused (there is nothing random); accepted like every strategy's.
        mixture: ``{domain: weight}`` to recommend instead of the uniform mixture; checked
            like any user mixture (known domains, weights >= 0 summing to 1, within the
            bounds) and, on a pool, it must be a pool member.
    """

    name = "uniform"

    def __init__(self, space: SearchSpace, seed: int = 0,
                 mixture: Mapping[str, float] | None = None) -> None:
        super().__init__(space, seed)
        self.mixture = self._choose(mixture)

    def _choose(self, mixture: Mapping[str, float] | None) -> dict[str, float]:
        mixtures, pool = self.space.mixtures, self.space.candidates
        if mixture is not None:
            if not isinstance(mixture, Mapping):
                raise ValueError("uniform: option 'mixture' must be an object "
                                 f"{{domain: weight}}, got {type(mixture).__name__}")
            w = mixtures.validate(mixture, field_name="mixture")
            if pool is not None:
                gap = (pool - w).abs().amax(-1)
                i = int(torch.argmin(gap))
                if float(gap[i]) > _POOL_TOL:
                    raise ValueError(
                        "mixture: not a member of the study's candidate pool (the nearest "
                        f"member differs by {float(gap[i]):.3g} in some domain); on a pool "
                        "only pool members can be scored")
                w = pool[i]
            return mixtures.to_dict(w)
        k = mixtures.k
        uniform = mixtures.project(torch.full((1, k), 1.0 / k, dtype=torch.float64))[0]
        if pool is not None:
            # Ties (two members equally close) go to the first, so the choice is stable.
            uniform = pool[int(torch.argmin((pool - uniform).norm(dim=-1)))]
        return mixtures.to_dict(uniform)

    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        """Nothing: the baseline spends no compute (a run with it stops at once)."""
        return []

    def recommend(self, history: Sequence[TrialResult]) -> Recommendation:
        """The fixed mixture at the target fidelity, with no prediction (nothing is
        modelled), whatever the history holds."""
        fid = self.space.fidelities
        return Recommendation(
            mixture=dict(self.mixture),
            predicted_objective=None,
            interval=None,
            model_size=fid.target_model_size,
            steps=int(fid.target_steps),  # type: ignore[arg-type]
        )
