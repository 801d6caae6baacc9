"""Tests for mfms_bo.optimize: acquisition maximisation over simplex x fidelity grid."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.optimize import ScoredQuery, fidelity_grid, maximize_acquisition
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace

W_STAR = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)


def _space(bounds=None, candidates=None) -> SearchSpace:
    return SearchSpace(
        MixtureSpace(("a", "b", "c", "d"), bounds=bounds or {}),
        FidelitySpace((20e6, 60e6, 150e6), 500, 4000, 400e6, checkpoints=4),
        candidates=candidates,
    )


def _acq(k: int, w_star: torch.Tensor):
    def acq(X: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        return -((X[:, :k] - w_star) ** 2).sum(-1) / cost

    return acq


def _unit_cost(m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(m, dtype=torch.float64)


def _dense_best(space: SearchSpace, w_star: torch.Tensor) -> float:
    W = space.mixtures.sample(20_000, torch.Generator().manual_seed(99))
    return float((-((W - w_star) ** 2).sum(-1)).max())


@pytest.mark.parametrize("seed", [0, 1])
def test_beats_dense_random_search(seed):
    space = _space()
    fids = fidelity_grid(space, 3)
    q = maximize_acquisition(_acq(4, W_STAR), space, fids, _unit_cost, n_mixtures=128,
                             generator=torch.Generator().manual_seed(seed))
    assert isinstance(q, ScoredQuery)
    assert q.score >= _dense_best(space, W_STAR) - 1e-3
    assert q.score == pytest.approx(float(-((q.mixture - W_STAR) ** 2).sum()), abs=1e-12)
    assert q.mixture.shape == (4,)
    assert abs(float(q.mixture.sum()) - 1.0) <= 1e-9 and bool((q.mixture >= 0).all())
    assert (q.model_size, q.steps) in fids


def test_bounded_space_stays_feasible_and_beats_dense_search():
    bounds = {"a": (0.0, 0.35), "b": (0.2, 0.6), "d": (0.1, 0.4)}
    space = _space(bounds=bounds)
    lo, hi = space.mixtures.lower, space.mixtures.upper
    fids = fidelity_grid(space, 2)
    for seed in range(3):
        q = maximize_acquisition(_acq(4, W_STAR), space, fids, _unit_cost, n_mixtures=64,
                                 generator=torch.Generator().manual_seed(seed))
        w = q.mixture
        assert abs(float(w.sum()) - 1.0) <= 1e-9
        assert bool((w >= lo - 1e-12).all()) and bool((w <= hi + 1e-12).all())
        assert q.score >= _dense_best(space, W_STAR) - 1e-3
    # The constrained optimum has a (0.35) at its upper bound.
    assert float(q.mixture[0]) == pytest.approx(0.35, abs=5e-3)


def test_prefers_cheaper_fidelity_when_value_is_equal():
    space = _space()
    fids = fidelity_grid(space, 2)

    def cost(m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (m.double() * z.double()) / 1e10

    def acq(X: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (1.0 - ((X[:, :4] - W_STAR) ** 2).sum(-1)) / c

    q = maximize_acquisition(acq, space, fids, cost, n_mixtures=32,
                             generator=torch.Generator().manual_seed(0))
    assert (q.model_size, q.steps) == (20e6, 500)


def test_extra_mixtures_are_scored():
    space = _space()
    q = maximize_acquisition(_acq(4, W_STAR), space, [(20e6, 500)], _unit_cost, n_mixtures=4,
                             extra_mixtures=W_STAR.unsqueeze(0), n_polish=0,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(q.mixture, W_STAR) and q.score == pytest.approx(0.0, abs=1e-15)


def test_no_fidelity_raises():
    with pytest.raises(ValueError, match="no runnable fidelity"):
        maximize_acquisition(_acq(4, W_STAR), _space(), [], _unit_cost)


# -- pools ---------------------------------------------------------------------------------
@pytest.fixture
def pool() -> torch.Tensor:
    P = MixtureSpace(("a", "b", "c", "d")).sample(12, torch.Generator().manual_seed(3))
    P[0] = W_STAR
    return P


def _is_member(w: torch.Tensor, P: torch.Tensor) -> bool:
    return bool(((P - w).abs().amax(-1) < 1e-12).any())


def test_pool_returns_member_and_respects_exclude(pool):
    space = _space(candidates=pool)
    fids = fidelity_grid(space, 2)
    acq = _acq(4, W_STAR)
    q = maximize_acquisition(acq, space, fids, _unit_cost,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(q.mixture, W_STAR) and _is_member(q.mixture, pool)
    # Exclude W_STAR at its full steps at every size: another pool member wins.
    ex = torch.tensor([[*W_STAR.tolist(), m, 4000.0] for m in space.fidelities.model_sizes],
                      dtype=torch.float64)
    q2 = maximize_acquisition(acq, space, fids, _unit_cost, exclude=ex,
                              generator=torch.Generator().manual_seed(0))
    assert _is_member(q2.mixture, pool) and not torch.equal(q2.mixture, W_STAR)
    expected = pool[1:][torch.argmax(-((pool[1:] - W_STAR) ** 2).sum(-1))]
    assert torch.equal(q2.mixture, expected)


def test_pool_exclude_is_per_size_and_steps(pool):
    space = _space(candidates=pool)
    fids = fidelity_grid(space, 2)  # steps 500 and 4000
    acq = _acq(4, W_STAR)
    # W_STAR was run at 20e6 up to 4000 steps and at 60e6 up to 500 steps only.
    ex = torch.tensor([[*W_STAR.tolist(), 20e6, 4000.0], [*W_STAR.tolist(), 60e6, 500.0]],
                      dtype=torch.float64)
    seen = set()
    for seed in range(4):
        q = maximize_acquisition(acq, space, fids, _unit_cost, exclude=ex,
                                 generator=torch.Generator().manual_seed(seed))
        assert torch.equal(q.mixture, W_STAR)
        assert q.model_size != 20e6
        assert (q.model_size, q.steps) != (60e6, 500)
        seen.add((q.model_size, q.steps))
    assert seen <= {(60e6, 4000), (150e6, 500), (150e6, 4000)}


def test_pool_fully_excluded_gives_non_finite_score(pool):
    space = _space(candidates=pool[:2])
    ex = torch.tensor([[*w.tolist(), m, 4000.0] for w in pool[:2] for m in (20e6, 60e6, 150e6)],
                      dtype=torch.float64)
    q = maximize_acquisition(_acq(4, W_STAR), space, fidelity_grid(space, 2), _unit_cost,
                             exclude=ex)
    assert q.score == float("-inf")


# -- fidelity_grid -------------------------------------------------------------------------
def test_fidelity_grid_shape_and_steps():
    space = _space()
    grid = fidelity_grid(space, 4)
    sizes = sorted({m for m, _ in grid})
    steps = sorted({z for _, z in grid})
    assert sizes == [20e6, 60e6, 150e6]
    assert steps[0] == 500 and steps[-1] == 4000 and len(steps) == 4
    assert len(grid) == 12
    assert all(isinstance(z, int) for _, z in grid)
    assert fidelity_grid(space, 1) == [(20e6, 4000), (60e6, 4000), (150e6, 4000)]


@pytest.mark.parametrize("cap, expected", [(20e6, [20e6]), (100e6, [20e6, 60e6]),
                                           (1e12, [20e6, 60e6, 150e6]), (1e6, [])])
def test_fidelity_grid_max_model_size(cap, expected):
    grid = fidelity_grid(_space(), 3, max_model_size=cap)
    assert sorted({m for m, _ in grid}) == expected
    assert all(m <= cap for m, _ in grid)


def test_fidelity_grid_single_steps_and_sizes():
    space = SearchSpace(MixtureSpace(("a", "b")),
                        FidelitySpace((1e7, 1e8), 1000, 1000, 1e8))
    assert fidelity_grid(space, 4) == [(1e7, 1000), (1e8, 1000)]
    assert fidelity_grid(space, 4, sizes=(1e8,)) == [(1e8, 1000)]
