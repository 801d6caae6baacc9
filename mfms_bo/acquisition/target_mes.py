"""Max-value entropy search at the target fidelity, per unit cost (multi-fidelity MES).

Why a second principled acquisition next to target KG: KG values a query by how much it
moves the *best target mean right now*. A cheap run whose outcome is only partly
correlated with the target (a small model) moves any one mixture's target mean by a
fraction ``rho`` of its sd, and KG's value of that falls off like ``exp(-gap^2 / (2 rho^2
sd^2))``: a screening run at the smallest size is worth almost nothing to it even when it
costs 1/60 of a target run, and the search buys target runs one by one (traced on RegMix,
docs/decisions.md). MES values a query by what it tells about the *minimum* target value
``f*`` (Wang & Jegelka 2017; the multi-fidelity form of Takeno et al. 2020), which decays
polynomially in ``rho``, so cheap runs are valued for what they teach about where the
optimum may be, and the learned correlation between sizes decides how much.

For a query ``x = (w, m, z)`` with noisy outcome ``y`` and the target value ``g = f(w, m*,
z*)`` of the same mixture, ``rho = corr(y, g)``, and a sample ``f*`` of the minimum,
``gamma = (mu_g - f*) / sd_g``. Conditioning on ``g >= f*`` (no target value lies below the
minimum) the entropy of ``y`` drops by

    rho^2 gamma phi(gamma) / (2 Phi(gamma)) - log Phi(gamma)
        + E[ log Phi((gamma + rho s) / sqrt(1 - rho^2)) ],

the expectation over ``s`` with density ``phi(s) Phi((gamma + rho s) / sqrt(1 - rho^2)) /
Phi(gamma)`` (one-dimensional: Gauss-Hermite centred on that density's own mean and sd,
or for ``|rho| > 0.9``, where the
integrand turns into a step in ``s``, a fixed grid in ``t = (gamma + rho s) / sqrt(1 -
rho^2)``); at ``rho = 1`` it is the truncated normal's closed form. The acquisition is
its average over samples of ``f*`` (minima of joint posterior draws on a discrete target
set), divided by the query's cost.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mfms_bo.acquisition.base import CostAwareAcquisition
from mfms_bo.acquisition.own_target import query_target_moments
from mfms_bo.space import SearchSpace
from mfms_bo.surrogate.mfms_gp import MFMSGP

__all__ = ["TargetMESPerCost", "entropy_reduction", "sample_minima"]

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(32)
_GH_S = torch.tensor(_NODES, dtype=torch.float64)
_GH_W = torch.tensor(_WEIGHTS / _WEIGHTS.sum(), dtype=torch.float64)
_RHO_MAX = 1.0 - 1e-12
_RHO2_GRID = 0.81  # above this rho^2, integrate on the t grid
_T = torch.linspace(-10.0, 8.0, 181, dtype=torch.float64)  # Phi(t) log Phi(t) ~ 0 outside
_DT = float(_T[1] - _T[0])
_LOG_NEG_G_T = torch.special.log_ndtr(_T) + torch.log(-torch.special.log_ndtr(_T))  # log|G|
_U = torch.linspace(0.0, 1.0, 361, dtype=torch.float64)  # the far elements' own grids


def entropy_reduction(gamma: Tensor, rho: Tensor) -> Tensor:
    """Entropy drop of ``y`` (nats) when ``g >= f*`` is learned, elementwise.

    Args:
        gamma: ``(mu_g - f*) / sd_g``, any shape.
        rho: ``corr(y, g)`` in ``[-1, 1]``, broadcastable to ``gamma``.
    Returns:
        Non-negative tensor of the broadcast shape.
    """
    gamma, rho = torch.broadcast_tensors(gamma.to(torch.float64), rho.to(torch.float64))
    r2 = (rho * rho).clamp(max=_RHO_MAX)
    log_cdf = torch.special.log_ndtr(gamma)
    # gamma * phi / Phi, through logs so it stays finite for very negative gamma.
    ratio = gamma * torch.exp(-0.5 * gamma * gamma - 0.5 * math.log(2 * math.pi) - log_cdf)
    closed = 0.5 * r2 * ratio - log_cdf
    # E_p[log Phi(h(s))], p(s) = phi(s) Phi(h(s)) / Phi(gamma), h = (gamma + rho s)/sqrt(1-rho^2),
    # each element by the quadrature that suits it.
    root = (1.0 - r2).sqrt()
    expect = torch.zeros_like(gamma)
    steep = r2 > _RHO2_GRID
    smooth = ~steep
    if bool(smooth.any()):
        # Gauss-Hermite on a normal with p's own mean and sd (s = rho u + sqrt(1-rho^2) v,
        # u a standard normal truncated to u >= -gamma), importance-weighted by p / that
        # normal: p moves ~rho |gamma| sd away from N(0, 1) when gamma is very negative.
        g, r, lc = gamma[smooth], rho[smooth], log_cdf[smooth]
        mills = torch.exp(-0.5 * g * g - 0.5 * math.log(2 * math.pi) - lc)  # E[u]
        var_u = (1.0 - g * mills - mills * mills).clamp(min=1e-12)
        sd = (r * r * var_u + 1.0 - r * r).sqrt().unsqueeze(-1)
        s_i = (r * mills).unsqueeze(-1) + sd * _GH_S
        h = (g.unsqueeze(-1) + r.unsqueeze(-1) * s_i) / root[smooth].unsqueeze(-1)
        log_h = torch.special.log_ndtr(h)
        log_ratio = (-0.5 * s_i * s_i + log_h - lc.unsqueeze(-1)) + 0.5 * _GH_S**2 + sd.log()
        expect[smooth] = (torch.exp(log_ratio) * _GH_W * log_h).sum(-1)
    if bool(steep.any()):
        # In t = h(s): s = (t sqrt(1-rho^2) - gamma) / rho, |ds| = sqrt(1-rho^2)/|rho| dt,
        # and the density of s is at least ~2 wide in t. Under p, t >= gamma sqrt(1-rho^2)
        # + rho v (v standard normal), so the fixed grid, on which Phi(t) log Phi(t) is
        # tabulated, covers it unless gamma is far negative; those get a grid of their own.
        g, rt, lc = gamma[steep], root[steep], log_cdf[steep]
        a = rho[steep].abs()
        far = g * rt < -4.0
        out = torch.empty_like(g)
        for sel, own_grid in ((~far, False), (far, True)):
            if not bool(sel.any()):
                continue
            gs, rs, as_, ls = (x[sel].unsqueeze(-1) for x in (g, rt, a, lc))
            if not own_grid:
                t, log_dt, neg_log_g = _T, math.log(_DT), _LOG_NEG_G_T
            else:
                lo = gs * rs - 6.0
                t = lo + (8.0 - lo) * _U
                log_dt = torch.log((8.0 - lo) / (_U.numel() - 1))
                log_phi = torch.special.log_ndtr(t)
                neg_log_g = log_phi + torch.log(-log_phi)
            s_t = (t * rs - gs) / as_  # its sign does not matter: only s^2 enters
            log_dens = (-0.5 * s_t * s_t - 0.5 * math.log(2 * math.pi) + torch.log(rs / as_)
                        + log_dt - ls)  # divided by Phi(gamma) in logs: both underflow
            out[sel] = -torch.exp(log_dens + neg_log_g).sum(-1)
        expect[steep] = out
    return (closed + expect).clamp(min=0.0)


def sample_minima(mean: Tensor, cov: Tensor, n_samples: int, generator: torch.Generator
                  ) -> Tensor:
    """``n_samples`` draws of ``min_t f(t)`` from the joint Gaussian ``N(mean, cov)``."""
    t = mean.numel()
    jitter = 1e-10 * float(cov.diagonal().mean().clamp(min=1e-30))
    for _ in range(6):
        L, info = torch.linalg.cholesky_ex(cov + jitter * torch.eye(t, dtype=cov.dtype))
        if int(info) == 0:
            break
        jitter *= 100.0
    else:  # numerically indefinite: fall back to the marginals (independent draws)
        L = torch.diag(cov.diagonal().clamp(min=0.0).sqrt())
    Z = torch.randn(t, n_samples, generator=generator, dtype=torch.float64)
    return (mean.unsqueeze(-1) + L @ Z).min(dim=0).values


class TargetMESPerCost(CostAwareAcquisition):
    """``I(y_x; f*) / cost(x)``: information about the target minimum per unit cost.

    Args:
        gp: fitted surrogate (pending trials already fantasised in).
        space: the search space (gives the target fidelity).
        target_W: ``t x k`` mixtures over which the minimum ``f*`` is sampled (the current
            best target mixtures and random ones).
        generator: seeds the draws of ``f*``.
        n_samples: draws of ``f*``.
    """

    def __init__(self, gp: MFMSGP, space: SearchSpace, target_W: Tensor,
                 generator: torch.Generator, n_samples: int = 16) -> None:
        self.gp = gp
        self.space = space
        XT = space.target_inputs(target_W)
        mu_T, V_T, _ = gp.whitened(XT)
        cov = (gp._k(XT, XT) - V_T.T @ V_T) * gp.y_std**2
        self.f_star = sample_minima(mu_T, cov, n_samples, generator)

    def information(self, X: Tensor) -> Tensor:
        """``I(y_x; f*)`` of each ``n x d`` query (nats), averaged over the draws of ``f*``."""
        q = query_target_moments(self.gp, self.space, X)
        var_y = q.var_q + self.gp.noise_variance
        rho = (q.cov_own / (var_y * q.var_own).sqrt()).clamp(-1.0, 1.0)
        gamma = (q.mu_own.unsqueeze(-1) - self.f_star) / q.var_own.sqrt().unsqueeze(-1)  # n x S
        return entropy_reduction(gamma, rho.unsqueeze(-1)).mean(-1)

    def __call__(self, X: Tensor, cost: Tensor) -> Tensor:
        return self.information(X) / cost.clamp(min=1e-300)
