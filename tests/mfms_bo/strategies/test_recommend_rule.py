"""``recommend="incumbent"``: the recommendation a proposal recorded stays until a mixture is
surely better, and the chain of incumbents lives in the specs, not in the strategy."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.bench.harness import evaluate_trial
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems.simulated import make_simulated
from mfms_bo.recommend import recommend_from_surrogate
from mfms_bo.strategies.bo import INCUMBENT_METADATA_KEY, MFMSBO

OPTIONS = {"n_mixtures": 64, "surrogate": {"maxiter": 30, "warm_maxiter": 10}}


@pytest.fixture(scope="module")
def problem():
    return make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6, 150e6],
                          target_model_size=150e6, steps=(500, 4000), checkpoints=4)


def _run(strategy: MFMSBO, problem, n: int) -> list:
    history: list = []
    for i in range(n):
        (spec,) = strategy.propose(history, [], 1)
        history.append(evaluate_trial(problem, spec, i))
    return history


def test_proposals_record_the_incumbent_and_any_process_continues_the_chain(problem):
    space = search_space_of(problem)
    strategy = MFMSBO(space, seed=0, recommend="incumbent", recommend_risk=0.5, **OPTIONS)
    history = _run(strategy, problem, 10)
    recorded = [r.spec.metadata.get(INCUMBENT_METADATA_KEY) for r in history]
    # the initial design is drawn before any fit; every model-based proposal records one
    assert recorded[-1] is not None and set(recorded[-1]) == set(space.mixtures.domains)
    assert abs(sum(recorded[-1].values()) - 1.0) < 1e-9
    again = MFMSBO(space, seed=0, recommend="incumbent", recommend_risk=0.5, **OPTIONS)
    assert again.recommend(history) == strategy.recommend(history)


def test_a_mixture_replaces_the_incumbent_only_where_surely_better(problem):
    space = search_space_of(problem)
    strategy = MFMSBO(space, seed=0, **OPTIONS)
    history = _run(strategy, problem, 9)
    gp = strategy.fit_surrogate(history).model
    g = torch.Generator().manual_seed(0)
    free = recommend_from_surrogate(gp, space, generator=g, risk=0.0)
    w_free = torch.tensor([[free.mixture[d] for d in space.mixtures.domains]],
                          dtype=torch.float64)
    # an incumbent far from the posterior mean's minimiser
    corner = torch.tensor([[0.05, 0.05, 0.90]], dtype=torch.float64)
    if float((w_free - corner).abs().sum()) < 0.5:
        corner = torch.tensor([[0.90, 0.05, 0.05]], dtype=torch.float64)

    def rec(risk: float):
        out = recommend_from_surrogate(gp, space, generator=torch.Generator().manual_seed(0),
                                       risk=risk, reference=corner)
        return torch.tensor([[out.mixture[d] for d in space.mixtures.domains]],
                            dtype=torch.float64)

    # no risk: the mean alone decides, as without an incumbent
    assert torch.allclose(rec(0.0), w_free, atol=1e-6)
    # a huge risk: only mixtures whose value moves with the incumbent's can replace it,
    # so the recommendation stays next to it
    assert float((rec(100.0) - corner).abs().sum()) < 0.2


def test_the_rule_is_validated(problem):
    space = search_space_of(problem)
    # the default: the incumbent with hysteresis of half a sd; the plain rule keeps risk 1
    default = MFMSBO(space)
    assert (default.recommend_rule, default.recommend_risk) == ("incumbent", 0.5)
    plain = MFMSBO(space, recommend="pessimistic")
    assert (plain.recommend_rule, plain.recommend_risk) == ("pessimistic", 1.0)
    assert MFMSBO(space, recommend="pessimistic", recommend_risk=0.0).recommend_risk == 0.0
    with pytest.raises(ValueError, match="recommend must be one of"):
        MFMSBO(space, recommend="best")
    with pytest.raises(ValueError, match="recommend_risk"):
        MFMSBO(space, recommend_risk=-1.0)
