"""Tests for mfms_bo.recommend: best observed run and the surrogate's recommendation."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.recommend import (
    Recommendation,
    final_objective,
    recommend_best_observed,
    recommend_from_surrogate,
)
from mfms_bo.space import SearchSpace
from mfms_bo.surrogate import MFMSGP, SurrogateConfig
from mfms_bo.trials import Measurement, TrialResult, TrialSpec


def _trial(space: SearchSpace, mixture: dict, size: float, steps: int, loss: float,
           last_step: int | None = None) -> TrialResult:
    last = steps if last_step is None else last_step
    losses = {d: loss for d in space.mixtures.domains}
    meas = (Measurement(last // 2, {d: loss + 0.5 for d in losses}), Measurement(last, losses))
    return TrialResult(TrialSpec(mixture, size, steps, space.fidelities.checkpoint_steps(steps)),
                       meas, completed=last == steps)


def test_best_observed_prefers_highest_fidelity(space3):
    hist = [
        _trial(space3, {"a": 1.0}, 20e6, 4000, 1.0),  # best loss, but a small model
        _trial(space3, {"b": 1.0}, 60e6, 4000, 3.0),
        _trial(space3, {"a": 0.5, "c": 0.5}, 60e6, 4000, 2.8),
        _trial(space3, {"c": 1.0}, 60e6, 2000, 2.0),  # shorter run at the same size
    ]
    rec = recommend_best_observed(hist, space3)
    assert isinstance(rec, Recommendation)
    assert rec.mixture == {"a": 0.5, "b": 0.0, "c": 0.5}
    assert rec.predicted_objective == pytest.approx(2.8)
    assert rec.interval is None
    assert (rec.model_size, rec.steps) == (60e6, 4000)


def test_best_observed_uses_reached_step_of_partial_runs(space3):
    hist = [
        _trial(space3, {"a": 1.0}, 60e6, 4000, 2.0, last_step=1000),  # failed early
        _trial(space3, {"b": 1.0}, 60e6, 2000, 2.5),
    ]
    rec = recommend_best_observed(hist, space3)
    assert rec is not None and rec.mixture["b"] == 1.0 and rec.steps == 2000


def test_best_observed_none_without_usable_trials(space3):
    assert recommend_best_observed([], space3) is None
    spec = TrialSpec({"a": 1.0}, 20e6, 500, (500,))
    partial = TrialResult(spec, (Measurement(500, {"a": 1.0}),))  # b, c missing
    assert recommend_best_observed([partial], space3) is None
    assert recommend_best_observed([TrialResult(spec, ())], space3) is None


def test_final_objective_falls_back_to_last_complete_measurement(space3):
    spec = TrialSpec({"a": 1.0}, 20e6, 1000, (500, 1000))
    r = TrialResult(spec, (Measurement(500, {"a": 3.0, "b": 3.0, "c": 3.0}),
                           Measurement(1000, {"a": 1.0})))
    assert final_objective(r, space3) == pytest.approx(3.0)
    r = TrialResult(spec, (Measurement(1000, {"a": 1.0, "b": 2.0, "c": 3.0}),
                           Measurement(500, {"a": 9.0, "b": 9.0, "c": 9.0})))
    assert final_objective(r, space3) == pytest.approx(2.0)


def _fit(space: SearchSpace) -> MFMSGP:
    g = torch.Generator().manual_seed(0)
    W = space.mixtures.sample(30, g)
    sizes = torch.tensor(space.fidelities.model_sizes, dtype=torch.float64)
    m = sizes[torch.randint(len(sizes), (30,), generator=g)]
    z = torch.randint(500, 4001, (30,), generator=g).double()
    X = space.encode(W, m, z)
    y = 2.0 + ((W - torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)) ** 2).sum(-1) \
        - 0.3 * X[:, -2] - 0.2 * X[:, -1]
    torch.manual_seed(0)
    return MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=40))


@pytest.fixture(scope="module")
def gp_and_space():
    from mfms_bo.space import FidelitySpace, MixtureSpace

    space = SearchSpace(MixtureSpace(("a", "b", "c")),
                        FidelitySpace((20e6, 60e6, 150e6), 500, 4000, 400e6, checkpoints=4))
    return space, _fit(space)


def test_from_surrogate_interval_and_simplex(gp_and_space, on_simplex):
    space, gp = gp_and_space
    rec = recommend_from_surrogate(gp, space, n_candidates=512,
                                   generator=torch.Generator().manual_seed(1))
    assert set(rec.mixture) == {"a", "b", "c"}
    on_simplex(torch.tensor(list(rec.mixture.values()), dtype=torch.float64))
    lo, hi = rec.interval
    assert lo < rec.predicted_objective < hi
    assert (rec.model_size, rec.steps) == (400e6, 4000)
    # The prediction is the GP's at the target, and no random mixture does better.
    w = torch.tensor([list(rec.mixture.values())], dtype=torch.float64)
    mean, var = gp.predict(space.target_inputs(w))
    assert float(mean[0]) == pytest.approx(rec.predicted_objective)
    assert (hi - lo) == pytest.approx(2 * 1.6448536269514722 * float(var[0].sqrt()), rel=1e-6)
    # A dense random search does not beat it by more than 2% of the posterior sd.
    W = space.mixtures.sample(4000, torch.Generator().manual_seed(2))
    dense = float(gp.predict(space.target_inputs(W))[0].min())
    assert rec.predicted_objective <= dense + 0.02 * float(var[0].sqrt())


def test_from_surrogate_respects_bounds(gp_and_space, on_simplex):
    from mfms_bo.space import MixtureSpace

    space, gp = gp_and_space
    bounded = SearchSpace(MixtureSpace(("a", "b", "c"), bounds={"b": (0.0, 0.25)}),
                          space.fidelities)
    rec = recommend_from_surrogate(gp, bounded, n_candidates=256,
                                   extra_mixtures=torch.tensor([[0.2, 0.2, 0.6]],
                                                               dtype=torch.float64),
                                   generator=torch.Generator().manual_seed(3))
    w = torch.tensor(list(rec.mixture.values()), dtype=torch.float64)
    on_simplex(w, bounded.mixtures.lower, bounded.mixtures.upper)


def test_from_surrogate_on_a_pool(gp_and_space):
    space, gp = gp_and_space
    pool = space.mixtures.sample(10, torch.Generator().manual_seed(4))
    pooled = SearchSpace(space.mixtures, space.fidelities, candidates=pool)
    rec = recommend_from_surrogate(gp, pooled)
    w = torch.tensor(list(rec.mixture.values()), dtype=torch.float64)
    assert bool(((pool - w).abs().amax(-1) < 1e-12).any())
    means = gp.predict(pooled.target_inputs(pool))[0]
    assert rec.predicted_objective == pytest.approx(float(means.min()))
