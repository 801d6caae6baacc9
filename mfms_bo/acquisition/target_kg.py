"""Knowledge gradient at the target fidelity, per unit cost.

The principled alternative to the seed's rule: a run at any fidelity is worth what it
teaches about the *target*. For a query ``x = (w, m, z)`` with noisy outcome ``y``, the
posterior mean at target-fidelity mixtures ``T`` moves by ``sigma_tilde(x, t) * Z`` with
``sigma_tilde = Cov(f(t), f(x)) / sqrt(Var f(x) + noise)`` and ``Z ~ N(0, 1)``. The value of
the query is the expected drop of the best target mean,

    KG(x) = min_t mu(t) - E_Z[min_t (mu(t) + sigma_tilde(x, t) Z)],

and the acquisition is ``KG(x) / cost(x)``: the standard cost-aware multi-fidelity KG
(Wu et al. 2019, BoTorch's qMFKG), computed here on a discrete target set (the current
best target mixtures, random ones and the query's own mixture at the target) with
Gauss-Hermite quadrature over ``Z``. Exact and vectorised, so thousands of queries score in
well under a second instead of BoTorch's nested optimisation (~90 s at n = 200 here).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mfms_bo.acquisition.base import CostAwareAcquisition
from mfms_bo.acquisition.own_target import query_target_moments
from mfms_bo.space import SearchSpace
from mfms_bo.surrogate.mfms_gp import MFMSGP

__all__ = ["TargetKGPerCost", "knowledge_gradient"]

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(32)
_GH_Z = torch.tensor(_NODES, dtype=torch.float64)
_GH_W = torch.tensor(_WEIGHTS / _WEIGHTS.sum(), dtype=torch.float64)


def knowledge_gradient(mu: Tensor, sigma_tilde: Tensor) -> Tensor:
    """``min mu - E[min(mu + sigma_tilde * Z)]`` row-wise for ``n x t`` inputs -> ``n``."""
    best_now = mu.min(dim=-1).values
    vals = mu.unsqueeze(-1) + sigma_tilde.unsqueeze(-1) * _GH_Z  # n x t x L
    expected_min = (vals.min(dim=-2).values * _GH_W).sum(-1)  # n
    return (best_now - expected_min).clamp(min=0.0)


class TargetKGPerCost(CostAwareAcquisition):
    """``KG(x) / cost(x)`` on a discrete set of target-fidelity mixtures.

    Args:
        gp: fitted surrogate (pending trials already fantasised in).
        space: the search space (gives the target fidelity).
        target_W: ``t x k`` mixtures whose target-fidelity values KG tracks.
    """

    def __init__(self, gp: MFMSGP, space: SearchSpace, target_W: Tensor) -> None:
        self.gp = gp
        self.space = space
        self.XT = space.target_inputs(target_W)
        self.mu_T, self.V_T, _ = gp.whitened(self.XT)

    def knowledge_gradient(self, X: Tensor) -> Tensor:
        """KG of each ``n x d`` query about the target (objective units)."""
        gp = self.gp
        q = query_target_moments(gp, self.space, X)
        sd_y = (q.var_q + gp.noise_variance).sqrt()
        cov_T = (gp._k(X, self.XT) - q.V_q.T @ self.V_T) * gp.y_std**2  # n x t
        # The query's own mixture at the target joins the set, one per row.
        mu = torch.cat([self.mu_T.expand(X.shape[0], -1), q.mu_own.unsqueeze(-1)], dim=-1)
        cov = torch.cat([cov_T, q.cov_own.unsqueeze(-1)], dim=-1)
        return knowledge_gradient(mu, cov / sd_y.unsqueeze(-1))

    def __call__(self, X: Tensor, cost: Tensor) -> Tensor:
        return self.knowledge_gradient(X) / cost.clamp(min=1e-300)
