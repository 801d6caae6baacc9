"""The pool-based problems built from the RegMix and Data Mixing Laws run tables."""

from __future__ import annotations

import math

import pytest

from mfms_bo.bench.problem import Problem, search_space_of
from mfms_bo.bench.problems.tables import (
    TableProblem,
    mixinglaws_problem,
    regmix_problem,
    table_problems,
)

NAMES = ["regmix-60m", "mixinglaws-5mix", "mixinglaws-redpajama"]
EXPECTED = {  # name: (candidates, coordinates, loss domains, sizes, steps)
    "regmix-60m": (256, 17, 13, 2, (1000, 1000)),
    "mixinglaws-5mix": (26, 5, 22, 4, (10000, 30000)),
    "mixinglaws-redpajama": (20, 7, 22, 4, (10000, 30000)),
}


@pytest.fixture(scope="module")
def problems() -> dict[str, TableProblem]:
    return table_problems()  # type: ignore[return-value]


@pytest.fixture(params=NAMES)
def problem(request: pytest.FixtureRequest, problems: dict[str, TableProblem]) -> TableProblem:
    return problems[request.param]


def test_names_and_factories(problems: dict[str, TableProblem]) -> None:
    assert list(problems) == NAMES
    assert regmix_problem().name == "regmix-60m"
    assert mixinglaws_problem("5Mix").name == "mixinglaws-5mix"
    assert mixinglaws_problem("redpajama").name == "mixinglaws-redpajama"
    with pytest.raises(ValueError, match="setting"):
        mixinglaws_problem("3mix")


def test_protocol_and_shape(problem: TableProblem) -> None:
    assert isinstance(problem, Problem)
    n, k, n_loss, n_sizes, steps = EXPECTED[problem.name]
    assert problem.candidates is not None and len(problem.candidates) == n
    assert len(problem.domains) == k and len(problem.loss_domains) == n_loss
    assert len(problem.model_sizes) == n_sizes and problem.steps == steps
    assert problem.target_model_size == max(problem.model_sizes)
    assert problem.objective_weights is not None
    assert set(problem.objective_weights) == set(problem.loss_domains)
    assert math.isclose(sum(problem.objective_weights.values()), 1.0)


def test_search_space(problem: TableProblem) -> None:
    space = search_space_of(problem)
    assert space.loss_domains == tuple(problem.loss_domains)
    assert space.objective_weights == problem.objective_weights
    assert space.candidates is not None
    assert tuple(space.candidates.shape) == (len(problem.candidates or []), len(problem.domains))
    assert space.fidelities.target_steps == problem.steps[1]


def test_candidates_sum_to_one(problem: TableProblem) -> None:
    for c in problem.candidates or []:
        assert list(c) == problem.domains
        assert all(v >= 0 for v in c.values())
        assert math.isclose(sum(c.values()), 1.0, abs_tol=1e-12)


def test_evaluate_curves(problem: TableProblem) -> None:
    z_max = problem.steps[1]
    for c in problem.candidates or []:
        for m in problem.model_sizes:
            curve = problem.evaluate(c, m, z_max, seed=0)
            assert curve, (problem.name, c, m)
            steps = [z for z, _ in curve]
            assert steps == sorted(set(steps)) and steps[-1] <= z_max
            for _, losses in curve:
                assert set(losses) == set(problem.loss_domains)
                assert all(math.isfinite(v) and v > 0 for v in losses.values())
        # the target is measured, and the curve stops at the requested step
        target = problem.evaluate(c, problem.target_model_size, z_max, seed=1)
        assert target[-1][0] == z_max
        early = problem.evaluate(c, problem.target_model_size, z_max - 1, seed=0)
        assert all(z < z_max for z, _ in early)
        # every size has a checkpoint by steps_min: no trial in the declared range is empty
        for m in problem.model_sizes:
            assert problem.evaluate(c, m, problem.steps[0], seed=0), (problem.name, c, m)


def test_evaluate_is_deterministic_and_matches_true_objective(problem: TableProblem) -> None:
    assert problem.candidates is not None and problem.objective_weights is not None
    c = problem.candidates[0]
    a = problem.evaluate(c, problem.target_model_size, problem.steps[1], seed=0)
    b = problem.evaluate(c, problem.target_model_size, problem.steps[1], seed=123)
    assert a == b
    z, losses = a[-1]
    obj = sum(w * losses[d] for d, w in problem.objective_weights.items())
    assert math.isclose(obj, problem.true_objective(c))


def test_optimum(problem: TableProblem) -> None:
    assert problem.candidates is not None
    values = [problem.true_objective(c) for c in problem.candidates]
    best = problem.candidates[values.index(min(values))]
    assert problem.true_objective(best) == problem.optimum()
    assert len(set(values)) == len(values)  # no ties: the optimum is unique


def test_matching_renormalises(problem: TableProblem) -> None:
    assert problem.candidates is not None
    c = problem.candidates[-1]
    scaled = {d: 3.0 * v for d, v in c.items() if v > 0}  # zero weights may be omitted
    assert problem.true_objective(scaled) == problem.true_objective(c)


def test_unknown_mixture_raises(problem: TableProblem) -> None:
    uniform = {d: 1.0 / len(problem.domains) for d in problem.domains}
    with pytest.raises(ValueError, match="not in the candidate pool"):
        problem.evaluate(uniform, problem.model_sizes[0], problem.steps[1], seed=0)
    with pytest.raises(ValueError, match="not in the candidate pool"):
        problem.true_objective(uniform)
    with pytest.raises(ValueError, match="unknown domain"):
        problem.true_objective({"nope": 1.0})
    assert problem.candidates is not None
    with pytest.raises(ValueError, match="model_size"):
        problem.evaluate(problem.candidates[0], 123.0, problem.steps[1], seed=0)


def test_cost_increases(problem: TableProblem) -> None:
    sizes = problem.model_sizes
    z0, z1 = problem.steps[0], problem.steps[1] + 1000
    costs = [problem.cost(m, z0) for m in sizes]
    assert all(c > 0 for c in costs) and costs == sorted(set(costs))
    assert problem.cost(sizes[0], z1) > problem.cost(sizes[0], z0)


def test_regmix_details() -> None:
    p = regmix_problem()
    # 6 * 6e7 params * 1e9 tokens = 3.6e17 FLOPs = 360 PFLOP
    assert math.isclose(p.cost(6e7, 1000), 360.0)
    assert set(p.loss_domains) <= set(p.domains)
    assert not {"nih_exporter", "philpapers", "enron_emails", "europarl"} & set(p.loss_domains)
