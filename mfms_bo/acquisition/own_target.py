"""Posterior moments of each query and of its own mixture at the target fidelity.

Both lookahead acquisitions need them: a run of mixture ``w`` at ``(m, z)`` is informative
about the target through the covariance between its outcome and ``f(w, m*, z*)``. Grids
score each mixture at many fidelities, so each distinct mixture's target point is whitened
once (one triangular solve per mixture, not per grid row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mfms_bo.space import SearchSpace
from mfms_bo.surrogate.mfms_gp import MFMSGP

__all__ = ["QueryTargetMoments", "query_target_moments"]


@dataclass(frozen=True)
class QueryTargetMoments:
    """For ``n`` queries, in objective units.

    Attributes:
        V_q: ``n_train x n`` whitened cross-covariances of the queries (``L^-1 K(train, X)``).
        var_q: latent posterior variance of each query (noise excluded).
        mu_own: posterior mean of each query's mixture at the target fidelity.
        var_own: its posterior variance.
        cov_own: posterior covariance between each query and its own target value.
    """

    V_q: Tensor
    var_q: Tensor
    mu_own: Tensor
    var_own: Tensor
    cov_own: Tensor


def query_target_moments(gp: MFMSGP, space: SearchSpace, X: Tensor) -> QueryTargetMoments:
    """:class:`QueryTargetMoments` of the ``n x d`` GP inputs ``X``."""
    s2 = gp.y_std**2
    _, V_q, pv_q = gp.whitened(X)
    var_q = (pv_q - (V_q * V_q).sum(0)).clamp(min=1e-12) * s2
    W_uniq, inverse = torch.unique(X[:, :-2], dim=0, return_inverse=True)
    mu_u, V_u, pv_u = gp.whitened(space.target_inputs(W_uniq))
    var_u = (pv_u - (V_u * V_u).sum(0)).clamp(min=1e-12) * s2
    k_own = gp.kernel_diag(X, space.target_inputs(X[:, :-2]))
    cov_own = (k_own - (V_q * V_u[:, inverse]).sum(0)) * s2
    return QueryTargetMoments(V_q, var_q, mu_u[inverse], var_u[inverse], cov_own)
