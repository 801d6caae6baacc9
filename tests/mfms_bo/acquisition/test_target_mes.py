"""Tests for mfms_bo.acquisition.target_mes: the entropy reduction against a direct
numerical entropy, its limits, minima sampling, and the acquisition on a fitted GP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mfms_bo.acquisition import TargetMESPerCost, entropy_reduction, sample_minima
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.surrogate import MFMSGP, SurrogateConfig


def _direct_entropy_drop(gamma: float, rho: float) -> float:
    """H[s] - H[s | u >= -gamma] for standard normals ``s, u`` with correlation ``rho``,
    from the exact conditional density on a fine grid (no closed form used)."""
    centre = rho * math.exp(norm.logpdf(gamma) - norm.logcdf(gamma))  # E[s | u >= -gamma]
    s = np.linspace(centre - 12.0, centre + 12.0, 240_001)
    ds = s[1] - s[0]
    p = np.exp(norm.logpdf(s) + norm.logcdf((gamma + rho * s) / math.sqrt(1 - rho * rho))
               - norm.logcdf(gamma))
    h_cond = -np.sum(p * np.log(np.maximum(p, 1e-300))) * ds
    return 0.5 * math.log(2 * math.pi * math.e) - h_cond


@pytest.mark.parametrize("gamma", [-40.0, -8.0, -2.0, -0.5, 0.0, 0.7, 2.5])
@pytest.mark.parametrize("rho", [0.05, 0.4, 0.85, 0.95, 0.999, -0.7, -0.97])
def test_entropy_reduction_matches_direct_numerical_entropy(gamma: float, rho: float):
    got = float(entropy_reduction(torch.tensor(gamma), torch.tensor(rho)))
    assert got == pytest.approx(_direct_entropy_drop(gamma, rho), rel=2e-4, abs=1e-7)


def test_entropy_reduction_limits():
    gamma = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
    # rho = 1: the truncated normal's closed form (Wang & Jegelka 2017).
    pdf, cdf = torch.exp(-0.5 * gamma**2) / math.sqrt(2 * math.pi), torch.special.ndtr(gamma)
    closed = gamma * pdf / (2 * cdf) - torch.log(cdf)
    assert torch.allclose(entropy_reduction(gamma, torch.ones_like(gamma)), closed, atol=2e-5)
    # rho = 0: an uncorrelated run says nothing about the minimum.
    assert torch.allclose(entropy_reduction(gamma, torch.zeros_like(gamma)),
                          torch.zeros_like(gamma), atol=1e-12)
    # More correlation, more information; a minimum far below the mean, less.
    rhos = torch.linspace(0.1, 0.99, 12, dtype=torch.float64)
    assert torch.all(entropy_reduction(torch.tensor(0.3), rhos).diff() > 0)
    assert torch.all(entropy_reduction(gamma, torch.tensor(0.6)).diff() < 0)
    # Finite and non-negative far in the tails; the sign of rho does not matter.
    far = entropy_reduction(torch.tensor([-40.0, 40.0, -40.0, -300.0]),
                            torch.tensor([0.5, 0.999, 0.999, 0.95]))
    assert torch.isfinite(far).all() and torch.all(far >= 0)
    assert torch.allclose(entropy_reduction(gamma, torch.tensor(-0.8)),
                          entropy_reduction(gamma, torch.tensor(0.8)), atol=1e-9)


def test_sample_minima_matches_monte_carlo_of_independent_minimum():
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    f_star = sample_minima(mean, torch.eye(3, dtype=torch.float64) * 0.25, 20_000, g)
    Z = torch.randn(3, 20_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = (mean.unsqueeze(-1) + 0.5 * Z).min(0).values
    assert float(f_star.mean()) == pytest.approx(float(ref.mean()), abs=0.01)
    assert float(f_star.std()) == pytest.approx(float(ref.std()), abs=0.01)
    # A rank-deficient covariance (duplicated points) still samples.
    cov = torch.ones(3, 3, dtype=torch.float64)
    assert torch.isfinite(sample_minima(mean, cov, 8, g)).all()


@pytest.fixture(scope="module")
def mes_setup():
    space = SearchSpace(MixtureSpace(("a", "b", "c")),
                        FidelitySpace((20e6, 60e6, 150e6), 500, 4000, 400e6, checkpoints=4))
    g = torch.Generator().manual_seed(0)
    W = space.mixtures.sample(24, g)
    m = torch.tensor([20e6, 60e6, 150e6], dtype=torch.float64).repeat(8)
    z = torch.tensor([500.0, 4000.0], dtype=torch.float64).repeat_interleave(12)
    X = space.encode(W, m, z)
    y = 2 + 0.5 * W[:, 0] - 0.3 * X[:, 3] - 0.2 * X[:, 4] + 0.3 * (W[:, 1] - 0.3) ** 2
    torch.manual_seed(0)
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=30))
    T = space.mixtures.sample(30, torch.Generator().manual_seed(1))
    return space, gp, T


def test_target_mes_per_cost_on_a_fitted_gp(mes_setup):
    space, gp, T = mes_setup
    acq = TargetMESPerCost(gp, space, T, torch.Generator().manual_seed(3), n_samples=32)
    assert acq.f_star.shape == (32,)
    w = space.mixtures.sample(10, torch.Generator().manual_seed(2))
    n = w.shape[0]
    X_t = space.target_inputs(w)
    X_low = space.encode(w, torch.full((n,), 20e6), torch.full((n,), 500.0))
    info_t, info_low = acq.information(X_t), acq.information(X_low)
    assert torch.isfinite(info_t).all() and torch.all(info_t >= 0) and float(info_t.max()) > 0
    # A run of the same mixture at the target teaches more than a small, short one.
    assert torch.all(info_t >= info_low - 1e-12)
    cost = torch.linspace(1.0, 4.0, n, dtype=torch.float64)
    assert torch.allclose(acq(X_t, cost), info_t / cost, rtol=1e-12, atol=0)
    # Seeded: the same generator state gives the same draws of f*.
    again = TargetMESPerCost(gp, space, T, torch.Generator().manual_seed(3), n_samples=32)
    assert torch.equal(again.f_star, acq.f_star)
