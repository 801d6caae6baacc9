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
        self.target = gp.posterior_points(space.target_inputs(target_W))

    def knowledge_gradient(self, X: Tensor) -> Tensor:
        """KG of each ``n x d`` query about the target (objective units)."""
        query = self.gp.posterior_points(X)
        # Each query's own mixture at the target joins the set, one per row. Grids score
        # a mixture at many fidelities, so each distinct mixture's target point is
        # whitened once (one triangular solve per mixture, not per grid row).
        W_uniq, inverse = torch.unique(X[:, :-2], dim=0, return_inverse=True)
        own = self.gp.posterior_points(self.space.target_inputs(W_uniq)).select(inverse)
        sd_y = (query.var + self.gp.noise_variance).sqrt()
        mu = torch.cat([self.target.mean.expand(X.shape[0], -1), own.mean.unsqueeze(-1)],
                       dim=-1)
        cov = torch.cat([query.covariance(self.target),  # n x t
                         query.paired_covariance(own).unsqueeze(-1)], dim=-1)
        return knowledge_gradient(mu, cov / sd_y.unsqueeze(-1))

    def __call__(self, X: Tensor, cost: Tensor) -> Tensor:
        return self.knowledge_gradient(X) / cost.clamp(min=1e-300)
