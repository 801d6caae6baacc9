"""``mfms_bo/study.py``: a stored study config parsed once into a typed ``StudyConfig``."""

from __future__ import annotations

import pytest

from mfms_bo.bench.harness import load_problem
from mfms_bo.bench.problem import config_of_problem, search_space_of
from mfms_bo.errors import ValidationError
from mfms_bo.limits import LOSS_MAX, LOSS_MIN
from mfms_bo.strategies import RandomSearch
from mfms_bo.study import StudyConfig

CONFIG = {"domains": ["code", "web"], "model_sizes": [20e6, 60e6],
          "steps": {"min": 100, "max": 1000}, "target": {"model_size": 1e9},
          "mixture_bounds": {"code": [0.1, 0.9]}}


def test_an_old_minimal_config_gets_the_defaults() -> None:
    c = StudyConfig.from_dict(CONFIG)
    assert (c.strategy, dict(c.strategy_options), c.online) == ("mfms-bo", {}, None)
    assert c.loss_bounds == (LOSS_MIN, LOSS_MAX) and not c.has_budget
    assert c.space.fidelities.target_steps == 1000 and c.space.fidelities.checkpoints == 8


def test_budget_strategy_and_bounds_are_parsed() -> None:
    c = StudyConfig.from_dict({**CONFIG, "budget": {"cost": 5, "trials": None},
                               "strategy": {"name": "random", "options": {}},
                               "loss_bounds": {"min": 1.0, "max": 3.0}})
    assert (c.budget_cost, c.budget_trials, c.has_budget) == (5.0, None, True)
    assert isinstance(c.make_strategy(seed=1), RandomSearch)
    with pytest.raises(ValidationError, match=r"^m\[0\]\['web'\]: must be in \(1, 3\), got 4"):
        c.check_losses({"web": 4.0}, "m[0]")
    assert c.check_losses({"web": 2.0}) == {"web": 2.0}


def test_proportions_may_leave_the_bounds_but_not_the_simplex() -> None:
    c = StudyConfig.from_dict(CONFIG)
    assert c.check_proportions({"code": 0.0, "web": 1.0}, "p") == {"code": 0.0, "web": 1.0}
    with pytest.raises(ValidationError, match="^p: weights must sum to 1"):
        c.check_proportions({"code": 0.5}, "p")


def test_a_benchmark_problem_and_its_study_config_search_the_same_space() -> None:
    problem = load_problem("regmix-60m")
    assert StudyConfig.from_dict(config_of_problem(problem)).space.loss_domains \
        == search_space_of(problem).loss_domains == tuple(problem.loss_domains)
