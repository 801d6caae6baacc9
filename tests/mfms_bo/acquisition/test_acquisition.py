"""Tests for mfms_bo.acquisition: EI, knowledge gradient, and their cost-aware wrappers."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mfms_bo.acquisition import (
    EIPerCost,
    TargetKGPerCost,
    expected_improvement,
    knowledge_gradient,
    seed_alpha,
)
from mfms_bo.cost import CostModel
from mfms_bo.optimize import fidelity_grid
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.surrogate import MFMSGP, SurrogateConfig

N_MC = 200_000


# -- closed forms against Monte Carlo ------------------------------------------------------
def test_expected_improvement_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.0, 0.5, -0.3, 1.0, 0.2, 2.0], dtype=torch.float64)
    var = torch.tensor([1.0, 0.04, 0.25, 0.5, 1e-4, 0.09], dtype=torch.float64)
    best_f = 0.1
    ei = expected_improvement(mean, var, best_f)
    Z = torch.randn(N_MC, generator=g, dtype=torch.float64)
    samples = (best_f - (mean.unsqueeze(-1) + var.sqrt().unsqueeze(-1) * Z)).clamp(min=0)
    mc = samples.mean(-1)
    se = samples.std(-1) / math.sqrt(N_MC)
    assert torch.all((ei - mc).abs() <= 4 * se + 1e-6), (ei, mc, se)
    assert torch.all(ei >= 0)


def test_expected_improvement_limits():
    mean = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    ei = expected_improvement(mean, torch.zeros(3, dtype=torch.float64), best_f=0.5)
    assert ei.tolist() == pytest.approx([0.5, 0.0, 1.5])  # zero variance: plain improvement
    # EI grows with variance at a fixed mean and shrinks as the mean gets worse.
    v = torch.tensor([0.01, 0.1, 1.0], dtype=torch.float64)
    assert torch.all(expected_improvement(torch.zeros(3, dtype=torch.float64), v, 0.0).diff() > 0)
    m = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.all(expected_improvement(m, torch.ones(3, dtype=torch.float64), 0.0).diff() < 0)


def test_knowledge_gradient_zero_without_information():
    mu = torch.tensor([[1.0, 0.5, 2.0], [0.3, 0.3, 0.4]], dtype=torch.float64)
    assert torch.equal(knowledge_gradient(mu, torch.zeros_like(mu)), torch.zeros(2,
                                                                              dtype=torch.float64))
    # Equal sigma_tilde shifts every target together: the argmin never changes, KG = 0.
    assert torch.allclose(knowledge_gradient(mu, torch.full_like(mu, 0.7)),
                          torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_knowledge_gradient_single_target_is_zero_and_two_targets_closed_form():
    mu = torch.tensor([[0.0]], dtype=torch.float64)
    assert float(knowledge_gradient(mu, torch.tensor([[3.0]], dtype=torch.float64))) == 0.0
    # Two targets: E[min(a, b)] for a jointly Gaussian pair driven by one Z has a closed form:
    # min(mu1 + s1 Z, mu2 + s2 Z); with mu = (0, 0), s = (1, -1): E[-|Z|] = -sqrt(2 / pi).
    kg = knowledge_gradient(torch.zeros(1, 2, dtype=torch.float64),
                            torch.tensor([[1.0, -1.0]], dtype=torch.float64))
    # 32-node Gauss-Hermite on a kink at Z = 0 (its worst case) is ~1.3% high.
    assert float(kg) == pytest.approx(math.sqrt(2 / math.pi), rel=0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knowledge_gradient_matches_monte_carlo(seed):
    g = torch.Generator().manual_seed(seed)
    n, t = 6, 7
    mu = torch.randn(n, t, generator=g, dtype=torch.float64) * 0.3
    sig = torch.randn(n, t, generator=g, dtype=torch.float64) * 0.5
    kg = knowledge_gradient(mu, sig)
    assert kg.shape == (n,)
    assert torch.all(kg >= 0) and torch.isfinite(kg).all()
    Z = torch.randn(N_MC, generator=g, dtype=torch.float64)
    mins = (mu.unsqueeze(-1) + sig.unsqueeze(-1) * Z).min(dim=-2).values  # n x N
    mc = mu.min(-1).values - mins.mean(-1)
    se = mins.std(-1) / math.sqrt(N_MC)
    # Gauss-Hermite with 32 nodes on a piecewise-linear integrand: ~1% of the scale.
    tol = 4 * se + 0.01 * sig.abs().max(-1).values
    assert torch.all((kg - mc).abs() <= tol), (kg, mc, tol)


def test_knowledge_gradient_nonnegative_random():
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        mu = torch.randn(30, 5, generator=g, dtype=torch.float64) * 10
        sig = torch.randn(30, 5, generator=g, dtype=torch.float64) * torch.rand(1, generator=g)
        kg = knowledge_gradient(mu, sig)
        assert torch.all(kg >= 0) and torch.isfinite(kg).all()


def test_seed_alpha():
    assert seed_alpha(0) == 1.0
    assert seed_alpha(10) == 0.99**10
    assert seed_alpha(-5) == 1.0
    assert seed_alpha(3, alpha0=2.0, decay=0.5) == 0.25


# -- cost-aware wrappers on a fitted GP ----------------------------------------------------
@pytest.fixture(scope="module")
def kg_setup():
    space = SearchSpace(MixtureSpace(("a", "b", "c")),
                        FidelitySpace((20e6, 60e6, 150e6), 500, 4000, 400e6, checkpoints=4))
    g = torch.Generator().manual_seed(0)
    W = space.mixtures.sample(20, g)
    m = torch.tensor([20e6, 60e6], dtype=torch.float64).repeat(10)
    z = torch.tensor([500.0, 4000.0], dtype=torch.float64).repeat_interleave(10)
    X = space.encode(W, m, z)
    y = 2 + 0.5 * W[:, 0] - 0.3 * X[:, 3] - 0.2 * X[:, 4] + 0.3 * (W[:, 1] - 0.3) ** 2
    torch.manual_seed(0)  # the linear mean's initial weights come from the global RNG
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(kernel="seed", maxiter=30))
    T = space.mixtures.sample(30, torch.Generator().manual_seed(1))
    w = space.mixtures.sample(6, torch.Generator().manual_seed(2))
    return space, gp, T, w


def _with_fidelity_lengthscale(gp: MFMSGP, value: float) -> MFMSGP:
    model = copy.deepcopy(gp.model)
    kernels = model.covar_module.base_kernel.kernels  # seed design: k_w * k_m * k_z
    for kern in kernels[1:]:
        kern.lengthscale = torch.full_like(kern.lengthscale, value)
    return MFMSGP(model, gp.train_X, gp.train_y, gp.y_mean, gp.y_std)


def test_target_kg_nonnegative_finite_everywhere(kg_setup):
    space, gp, T, w = kg_setup
    acq = TargetKGPerCost(gp, space, T)
    fids = fidelity_grid(space, 4)
    Xs = torch.cat([space.encode(w, torch.full((w.shape[0],), m), torch.full((w.shape[0],),
                                                                             float(z)))
                    for m, z in fids] + [space.target_inputs(w)])
    kg = acq.knowledge_gradient(Xs)
    assert kg.shape == (Xs.shape[0],)
    assert torch.all(kg >= 0) and torch.isfinite(kg).all()
    assert float(kg.max()) > 0


def test_target_kg_prefers_target_when_fidelity_lengthscale_short(kg_setup):
    space, gp, T, w = kg_setup
    short = _with_fidelity_lengthscale(gp, 0.05)
    acq = TargetKGPerCost(short, space, T)
    n = w.shape[0]
    kg_target = acq.knowledge_gradient(space.target_inputs(w))
    kg_low = acq.knowledge_gradient(space.encode(w, torch.full((n,), 20e6),
                                                 torch.full((n,), 500.0)))
    # With nearly independent fidelities, a cheap run says next to nothing about the target.
    assert torch.all(kg_target >= kg_low)
    assert float(kg_target.sum()) > 100 * float(kg_low.sum()) + 1e-9
    # The original GP was not modified by building the variant.
    assert gp.model.covar_module.base_kernel.kernels[1].lengthscale.item() != pytest.approx(0.05)


def test_target_kg_per_cost_divides_and_can_flip_ranking(kg_setup):
    space, gp, T, w = kg_setup
    acq = TargetKGPerCost(gp, space, T)
    X = space.target_inputs(w)
    kg = acq.knowledge_gradient(X)
    cost = torch.linspace(1.0, 3.0, X.shape[0], dtype=torch.float64)
    assert torch.allclose(acq(X, cost), kg / cost, rtol=1e-12, atol=0)
    # Two queries ordered by KG; a cost ratio larger than their KG ratio reverses the order.
    hi_i, lo_i = int(torch.argmax(kg)), int(torch.argmin(kg + (kg <= 0) * 1e9))
    assert float(kg[lo_i]) > 0 and float(kg[hi_i]) > float(kg[lo_i])
    pair = X[[hi_i, lo_i]]
    ratio = float(kg[hi_i] / kg[lo_i])
    flipped = acq(pair, torch.tensor([4.0 * ratio, 1.0], dtype=torch.float64))
    assert float(flipped[1]) > float(flipped[0])


def test_target_kg_with_cost_model_prefers_cheap_informative_runs(kg_setup):
    """With the default fitted (long) fidelity lengthscales, a run at a cheaper fidelity
    carries information about the target, so KG per cost can pick it over the target."""
    space, gp, T, w = kg_setup
    acq = TargetKGPerCost(gp, space, T)
    cm = CostModel()
    n = w.shape[0]
    m = torch.full((n,), 150e6, dtype=torch.float64)
    z = torch.full((n,), 4000.0, dtype=torch.float64)
    X_mid = space.encode(w, m, z)
    X_t = space.target_inputs(w)
    c_mid = cm.predict(m, z)
    c_t = cm.predict(torch.full((n,), 400e6, dtype=torch.float64), z)
    kg_mid, kg_t = acq.knowledge_gradient(X_mid), acq.knowledge_gradient(X_t)
    assert float(kg_mid.sum()) > 0 and float(kg_t.sum()) > 0
    # Same order of magnitude of information, 2.7x cheaper.
    assert float(kg_mid.max()) > 0.3 * float(kg_t.max())
    per_cost_mid, per_cost_t = acq(X_mid, c_mid), acq(X_t, c_t)
    assert float(per_cost_mid.max()) > float(per_cost_t.max())


def test_ei_per_cost(kg_setup):
    space, gp, _, w = kg_setup
    X = space.target_inputs(w)
    mean, var = gp.predict(X, law_uncertainty=False)  # what the acquisition ranks by
    best_f = float(gp.train_y.min())
    ei = expected_improvement(mean, var, best_f)
    cost = torch.linspace(0.5, 5.0, X.shape[0], dtype=torch.float64)
    assert torch.allclose(EIPerCost(gp, best_f, alpha=0.0)(X, cost), ei)
    assert torch.allclose(EIPerCost(gp, best_f, alpha=1.0)(X, cost), ei / cost)
    assert torch.allclose(EIPerCost(gp, best_f, alpha=0.5)(X, cost), ei / cost.sqrt())
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="best_f"):
            EIPerCost(gp, bad)
