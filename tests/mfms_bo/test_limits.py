"""Option range checks: every strategy refuses a bad or oversized option by name."""

from __future__ import annotations

import math

import pytest

from mfms_bo.bench.harness import load_problem
from mfms_bo.bench.problem import search_space_of
from mfms_bo.errors import ValidationError
from mfms_bo.limits import real_number, whole_number
from mfms_bo.strategies import make_strategy


@pytest.mark.parametrize("bad", [True, 1.5, "3", None, 0, 11])
def test_whole_number_refuses_what_is_not_an_int_in_range(bad) -> None:
    with pytest.raises(ValueError, match=r"n: must be a whole number in \[1, 10\]"):
        whole_number("n", bad, 1, 10)
    assert whole_number("n", 10, 1, 10) == 10


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.5", False, 0.0, 1.0001])
def test_real_number_open_and_closed_ends(bad) -> None:
    with pytest.raises(ValueError, match=r"f: must be a number in \(0, 1\]"):
        real_number("f", bad, 0.0, 1.0, low_open=True)
    assert real_number("f", 1, 0.0, 1.0, low_open=True) == 1.0


@pytest.mark.parametrize(("name", "options", "field"), [
    ("mfms-bo", {"n_mixtures": 10**9}, "n_mixtures"),
    ("mfms-bo", {"n_steps": 0}, "n_steps"),
    ("mfms-bo", {"n_init": -1}, "n_init"),
    ("mfms-bo", {"surrogate": {"max_condition_points": 10**7}}, "max_condition_points"),
    ("mfms-bo", {"surrogate": {"refit_growth": math.nan}}, "refit_growth"),
    ("mf-bo", {"n_mixtures": 0}, "n_mixtures"),
    ("hyperband", {"eta": 1}, "eta"),
    ("hyperband", {"n_steps": 10**6}, "n_steps"),
    ("screen", {"screen_fraction": 1.0}, "screen_fraction"),
    ("screen", {"top_k": 0}, "top_k"),
    ("screen", {"max_screen": 10**9}, "max_screen"),
])
def test_strategies_refuse_out_of_range_options(name: str, options: dict, field: str) -> None:
    space = search_space_of(load_problem("sim-k3"))
    with pytest.raises(ValidationError, match=f"strategy '{name}': {field}: must be"):
        make_strategy(name, space, 0, options)


@pytest.mark.parametrize(("name", "package", "options", "field"), [
    ("regmix", "lightgbm", {"learning_rate": 0}, "learning_rate"),
    ("regmix", "lightgbm", {"top_average": 10**6, "n_candidates": 10}, "top_average"),
    ("tpe", "optuna", {"n_startup_trials": -1}, "n_startup_trials"),
    ("dehb", "dehb", {"crossover_prob": 2}, "crossover_prob"),
    ("dehb", "dehb", {"max_rungs": 1}, "max_rungs"),
])
def test_peer_and_regmix_options_are_range_checked(name: str, package: str, options: dict,
                                                    field: str) -> None:
    pytest.importorskip(package)
    space = search_space_of(load_problem("sim-k3"))
    with pytest.raises(ValidationError, match=f"strategy '{name}': {field}: must be"):
        make_strategy(name, space, 0, options)
