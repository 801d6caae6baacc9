"""Equal-cost bundles: the fidelity choice that values cheap runs in numbers."""

from __future__ import annotations

import copy

import pytest
import torch

from mfms_bo.acquisition import TargetKGPerCost, bundle_knowledge_gradient, choose_fidelity
from mfms_bo.acquisition.bundle import _greedy_bundle
from mfms_bo.bench.harness import evaluate_trial
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems.simulated import make_simulated
from mfms_bo.optimize import fidelity_grid
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.strategies.bo import MFMSBO
from mfms_bo.surrogate import MFMSGP, SurrogateConfig


@pytest.fixture(scope="module")
def setup():
    """Eight runs, half small and short, half at the target, of a bumpy mixture response."""
    space = SearchSpace(MixtureSpace(("a", "b", "c")),
                        FidelitySpace((20e6, 60e6, 150e6), 500, 4000, 150e6, checkpoints=4))
    g = torch.Generator().manual_seed(0)
    W = space.mixtures.sample(8, g)
    m = torch.tensor([20e6, 150e6], dtype=torch.float64).repeat(4)
    z = torch.tensor([500.0, 4000.0], dtype=torch.float64).repeat_interleave(4)
    X = space.encode(W, m, z)
    y = (2 - 0.3 * X[:, 3] - 0.2 * X[:, 4] + 0.3 * torch.sin(6 * W[:, 0])
         + 0.4 * (W[:, 1] - 0.3) ** 2 + 0.01 * torch.randn(8, generator=g, dtype=torch.float64))
    torch.manual_seed(0)  # the linear mean's initial weights come from the global RNG
    # The linear mean: these tests set the kernel's fidelity lengthscales by hand and read
    # what follows for the bundles; a scaling law fitted to eight points would move part of
    # the fidelity trend out of the kernel and blur what the lengthscales alone decide.
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(kernel="seed", mean="linear", maxiter=30))
    T = space.mixtures.sample(30, torch.Generator().manual_seed(1))
    return space, gp, T


def _fidelity_lengthscale(gp: MFMSGP, value: float) -> MFMSGP:
    """The seed design (k_w * k_m * k_z) with both fidelity lengthscales set: long makes a
    small run as telling as a target run, short makes it say nothing about the target."""
    model = copy.deepcopy(gp.model)
    for kern in model.covar_module.base_kernel.kernels[1:]:
        kern.lengthscale = torch.full_like(kern.lengthscale, value)
    return MFMSGP(model, gp.train_X, gp.train_y, gp.y_mean, gp.y_std)


def _cost(M: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    return M * Z / (150e6 * 4000)


def test_a_bundle_of_one_run_is_worth_its_knowledge_gradient(setup):
    space, gp, T = setup
    acq = TargetKGPerCost(gp, space, T)
    w = space.mixtures.sample(64, torch.Generator().manual_seed(5))
    z = torch.randn(1, 50_000, generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)
    for X in (space.target_inputs(w),
              space.encode(w, torch.full((64,), 60e6), torch.full((64,), 1414.0))):
        single = acq.knowledge_gradient(X)
        for i in torch.argsort(single, descending=True)[:3].tolist():
            assert float(single[i]) > 1e-3
            mc = bundle_knowledge_gradient(acq, X[i:i + 1], z)
            assert mc == pytest.approx(float(single[i]), rel=0.03)


def test_a_greedy_bundle_spreads_and_is_worth_more_than_its_first_run(setup):
    space, gp, T = setup
    acq = TargetKGPerCost(gp, space, T)
    w = space.mixtures.sample(40, torch.Generator().manual_seed(7))
    X = space.encode(w, torch.full((40,), 60e6), torch.full((40,), 1414.0))
    X = torch.cat([X, X[:5]])  # exact repeats must not be picked twice
    idx = _greedy_bundle(acq, X, 8)
    assert idx.numel() == 8 and torch.unique(idx).numel() == 8
    assert torch.unique(X[idx], dim=0).shape[0] == 8
    z = torch.randn(8, 4000, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    first = bundle_knowledge_gradient(acq, X[idx[:1]], z)
    assert bundle_knowledge_gradient(acq, X[idx], z) > first > 0


@pytest.mark.parametrize(("lengthscale", "expect"), [(50.0, "cheapest"), (0.02, "dearest")])
def test_cheap_runs_are_bought_only_when_they_tell_about_the_target(setup, lengthscale,
                                                                    expect):
    space, gp, T = setup
    acq = TargetKGPerCost(_fidelity_lengthscale(gp, lengthscale), space, T)
    fids = fidelity_grid(space, 3)
    chosen, values = choose_fidelity(acq, space, fids, _cost, n_mixtures=64, max_bundle=16,
                                     generator=torch.Generator().manual_seed(0))
    costs = {f: float(_cost(torch.tensor(f[0]), torch.tensor(float(f[1])))) for f in fids}
    want = (min if expect == "cheapest" else max)(costs, key=costs.get)
    assert chosen == want
    by_fid = {v.fidelity: v for v in values}
    assert by_fid[want].size == (16 if expect == "cheapest" else 1)
    assert all(v.kg >= 0 and v.cost > 0 for v in values)


def test_nothing_left_to_learn_keeps_the_whole_grid(setup):
    space, gp, T = setup
    pool = space.mixtures.sample(4, torch.Generator().manual_seed(3))
    pooled = SearchSpace(space.mixtures, space.fidelities, candidates=pool)
    acq = TargetKGPerCost(gp, pooled, pool)
    fids = fidelity_grid(pooled, 2)
    # Every pool member already run at every fidelity: no bundle can be formed.
    exclude = torch.cat([torch.cat([pool, torch.full((4, 1), m), torch.full((4, 1), 4000.0)],
                                   dim=-1) for m, _ in fids])
    chosen, values = choose_fidelity(acq, pooled, fids, _cost, exclude=exclude,
                                     generator=torch.Generator().manual_seed(0))
    assert chosen is None and values == []


def test_mfms_bo_with_bundles_proposes_the_same_run_from_the_same_history():
    problem = make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6, 150e6],
                             target_model_size=150e6, steps=(500, 4000), checkpoints=4)
    space = search_space_of(problem)
    options = {"n_mixtures": 64, "surrogate": {"maxiter": 30, "warm_maxiter": 10},
               "bundle": True, "max_bundle": 8}
    strat = MFMSBO(space, seed=0, **options)
    history = []
    for i in range(8):
        (spec,) = strat.propose(history, [])
        history.append(evaluate_trial(problem, spec, i))
    fresh = MFMSBO(space, seed=0, **options).propose(history, [])
    assert fresh == strat.propose(history, [])
    (spec,) = fresh
    assert spec.model_size in space.fidelities.model_sizes
    assert space.fidelities.steps_min <= spec.steps <= space.fidelities.steps_max
    with pytest.raises(ValueError, match="bundle must be true or false"):
        MFMSBO(space, bundle="yes")
    with pytest.raises(ValueError, match="max_bundle"):
        MFMSBO(space, max_bundle=0)


def test_a_trial_price_is_added_to_every_run_once_costs_are_reported():
    problem = make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6, 150e6],
                             target_model_size=150e6, steps=(500, 4000), checkpoints=4)
    space = search_space_of(problem)
    strat = MFMSBO(space, seed=0, trial_price=7.0)
    sizes = torch.tensor([20e6, 150e6], dtype=torch.float64)
    steps = torch.tensor([500.0, 4000.0], dtype=torch.float64)
    # No cost reported yet: predictions are in the prior's unit, the price is not added.
    assert torch.equal(strat._run_cost([])(sizes, steps),
                       strat._cost_model([]).predict(sizes, steps))
    (spec,) = strat.propose([], [])
    history = [evaluate_trial(problem, spec, 0)]
    compute = strat._cost_model(history).predict(sizes, steps)
    torch.testing.assert_close(strat._run_cost(history)(sizes, steps), compute + 7.0)
