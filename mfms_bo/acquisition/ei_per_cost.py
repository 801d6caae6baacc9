"""The MFMS-BO paper's acquisition: EI of the queried point per cost^alpha.

Faithful to the seed (Yen et al. 2025 and namkoong-lab/data-recipes): for each fidelity
``(m, z)`` maximise the expected improvement of ``f(w, m, z)`` over the best objective seen
at any fidelity, then pick the ``(w, m, z)`` with the largest ``EI / cost(m, z)^alpha``;
``alpha`` starts at 1 and decays by 0.99 per iteration. Because the per-fidelity maxima are
compared after dividing by a per-fidelity constant, scoring the joint candidate set at once
is the same rule. Note it is *not* "EI at the target / cost", which ignores what the query
is and always picks the cheapest run.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mfms_bo.acquisition.base import CostAwareAcquisition
from mfms_bo.surrogate.mfms_gp import MFMSGP

__all__ = ["EIPerCost", "expected_improvement", "seed_alpha"]


def expected_improvement(mean: Tensor, var: Tensor, best_f: float) -> Tensor:
    """Analytic EI for minimisation: ``E[max(best_f - f, 0)]`` with ``f ~ N(mean, var)``."""
    sigma = var.clamp(min=1e-18).sqrt()
    u = (best_f - mean) / sigma
    normal = torch.distributions.Normal(torch.zeros_like(u), torch.ones_like(u))
    return (sigma * (normal.log_prob(u).exp() + u * normal.cdf(u))).clamp(min=0.0)


def seed_alpha(iteration: int, alpha0: float = 1.0, decay: float = 0.99) -> float:
    """The seed's cost exponent after ``iteration`` BO iterations."""
    return alpha0 * decay ** max(0, int(iteration))


class EIPerCost(CostAwareAcquisition):
    """``EI(w, m, z) / cost(m, z)^alpha`` with ``best_f`` the lowest objective observed."""

    def __init__(self, gp: MFMSGP, best_f: float, alpha: float = 1.0) -> None:
        if not math.isfinite(best_f):
            raise ValueError("EIPerCost: best_f must be finite")
        self.gp = gp
        self.best_f = float(best_f)
        self.alpha = float(alpha)

    def __call__(self, X: Tensor, cost: Tensor) -> Tensor:
        mean, var = self.gp.predict(X, law_uncertainty=False)
        return expected_improvement(mean, var, self.best_f) / cost.clamp(min=1e-300) ** self.alpha
